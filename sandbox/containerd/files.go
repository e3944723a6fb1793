package ctrexec

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/opencontainers/image-spec/identity"

	"github.com/cleanroom-ci/cleanroom/sandbox"
)

// ReadImageFiles reads regular files from an image's root filesystem
// without running anything: a read-only view of the unpacked snapshot is
// mounted on the host for the duration of the call. Paths are absolute
// inside the image; symbolic links are followed within the image (an
// absolute link target is taken relative to the image root, never the
// host's). Paths that do not exist or are not regular files are absent
// from the result; a file larger than max is an error.
//
// The runner uses it to build the step's CA bundle for TLS inspection
// from the image's own bundle.
func (e *Executor) ReadImageFiles(ctx context.Context, img sandbox.Image, paths []string, max int64) (map[string][]byte, error) {
	ctx = e.nsctx(ctx)
	image, err := e.client.GetImage(ctx, img.Name)
	if err != nil {
		return nil, fmt.Errorf("image %s is not available locally: %w", img.Ref, err)
	}
	diffIDs, err := image.RootFS(ctx)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", img.Ref, err)
	}
	labels := map[string]string{sandbox.LabelManaged: "true"}
	if e.runID != "" {
		labels[sandbox.LabelRun] = e.runID
	}
	lctx, doneLease, err := e.client.WithLease(ctx, leases.WithExpiration(10*time.Minute), leases.WithLabels(labels))
	if err != nil {
		return nil, fmt.Errorf("create lease: %w", err)
	}
	defer func() {
		tctx, cancel := teardownContext(ctx)
		defer cancel()
		doneLease(tctx)
	}()
	var rnd [6]byte
	rand.Read(rnd[:])
	key := "cr-files-" + hex.EncodeToString(rnd[:])
	sn := e.client.SnapshotService(snapshotter)
	mounts, err := sn.View(lctx, key, identity.ChainID(diffIDs).String(), snapshots.WithLabels(labels))
	if err != nil {
		return nil, fmt.Errorf("view image %s: %w", img.Ref, err)
	}
	defer func() {
		tctx, cancel := teardownContext(ctx)
		defer cancel()
		sn.Remove(tctx, key)
	}()
	out := map[string][]byte{}
	err = mount.WithReadonlyTempMount(ctx, mounts, func(root string) error {
		for _, p := range paths {
			data, err := readInRoot(root, p, max)
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errNotRegular) {
				continue
			}
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			out[p] = data
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read files of image %s: %w", img.Ref, err)
	}
	return out, nil
}

var errNotRegular = errors.New("not a regular file")

// readInRoot reads the file at the absolute image path p under root,
// resolving symbolic links component by component as the image would see
// them: ".." stops at the image root and absolute targets start there.
func readInRoot(root, p string, max int64) ([]byte, error) {
	resolved, err := resolveInRoot(root, p)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(root, filepath.FromSlash(resolved)))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errNotRegular
	}
	if fi.Size() > max {
		return nil, fmt.Errorf("larger than %d bytes", max)
	}
	return io.ReadAll(io.LimitReader(f, max+1))
}

// resolveInRoot returns the slash path inside root that p names after
// following every symbolic link, with no component escaping root.
func resolveInRoot(root, p string) (string, error) {
	const maxLinks = 40
	links := 0
	pending := strings.Split(strings.TrimPrefix(path.Clean("/"+p), "/"), "/")
	cur := "/"
	for len(pending) > 0 {
		c := pending[0]
		pending = pending[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, c)
		fi, err := os.Lstat(filepath.Join(root, filepath.FromSlash(next)))
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > maxLinks {
			return "", errors.New("too many levels of symbolic links")
		}
		target, err := os.Readlink(filepath.Join(root, filepath.FromSlash(next)))
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(target, "/") {
			cur = "/"
		}
		pending = append(strings.Split(target, "/"), pending...)
	}
	return cur, nil
}
