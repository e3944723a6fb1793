// Package imagepack turns a root filesystem directory into a single-layer
// OCI image archive, reproducibly: the same directory gives the same
// digest (sorted entries, zero timestamps, root ownership), so an image
// built from Debian packages can be pinned by digest in provenance. It lets
// users and tests make step images without a registry or a Docker daemon.
package imagepack

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/cleanroom-ci/cleanroom/internal/atomicfile"
)

// Options describe the image config.
type Options struct {
	// Name is recorded as the image's ref name annotation (informational;
	// cleanroom names imported images by content).
	Name string
	Env  []string
	Cmd  []string
	// Volumes are declared in the config (VOLUME), as database images do.
	Volumes []string
}

// Image builds an image from the directory tree at root.
func Image(root string, o Options) (v1.Image, error) {
	var buf bytes.Buffer
	if err := tarTree(&buf, root); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	})
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	env := o.Env
	if len(env) == 0 {
		env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture = runtime.GOARCH
	cfg.OS = "linux"
	cfg.Config.Env = env
	cfg.Config.Cmd = o.Cmd
	if len(o.Volumes) > 0 {
		cfg.Config.Volumes = map[string]struct{}{}
		for _, v := range o.Volumes {
			cfg.Config.Volumes[v] = struct{}{}
		}
	}
	cfg.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, err
	}
	return mutate.Canonical(img)
}

// WriteOCIArchive writes img as an OCI image layout in a tar file (what the
// pipeline's `oci-archive:` reads).
func WriteOCIArchive(path string, img v1.Image, refName string) error {
	dir, err := os.MkdirTemp("", "imagepack-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	var opts []layout.Option
	if refName != "" {
		opts = append(opts, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": refName}))
	}
	if err := p.AppendImage(img, opts...); err != nil {
		return err
	}
	return atomicfile.Write(path, 0o644, func(w io.Writer) error { return tarTree(w, dir) })
}

// WriteDockerArchive writes img as a `docker save`-style tar.
func WriteDockerArchive(path string, img v1.Image, tag string) error {
	ref, err := name.NewTag(tag)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(path, ref, img)
}

// tarTree writes root as a tar stream with sorted entries, zero times and
// root ownership, preserving modes and symlinks.
func tarTree(w io.Writer, root string) error {
	var paths []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != root {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(paths)
	tw := tar.NewWriter(w)
	epoch := time.Unix(0, 0).UTC()
	for _, p := range paths {
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		link := ""
		if fi.Mode()&os.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		hdr.ModTime, hdr.AccessTime, hdr.ChangeTime = epoch, time.Time{}, time.Time{}
		hdr.Format = tar.FormatPAX
		hdr.PAXRecords = nil
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		}
	}
	return tw.Close()
}
