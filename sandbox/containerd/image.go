package ctrexec

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cleanroom-ci/cleanroom/internal/flock"
	"github.com/cleanroom-ci/cleanroom/sandbox"
)

// Image reference schemes for archives, as in the pipeline file.
const (
	OCIArchive    = "oci-archive:"
	DockerArchive = "docker-archive:"
	// archiveRepo names images imported from archives. The name is derived
	// from the archive's own sha256, never from names inside the archive,
	// so an archive cannot shadow a registry image in the local store.
	archiveRepo = "archive.cleanroom.local/sha256"
)

// Resolve makes ref available locally (import or pull, unpacked) and
// returns its digest. Archives are cached by content: the same file is
// imported once. Registry tags are always resolved against the registry so
// a moved tag is noticed; digest-pinned images already present are reused,
// since their content is addressed by that digest.
func (e *Executor) Resolve(ctx context.Context, ref string) (sandbox.Image, error) {
	ctx = e.nsctx(ctx)
	e.imageMu.Lock()
	defer e.imageMu.Unlock()
	if e.runID != "" {
		// The import or pull, and the unpack, hold their content and
		// snapshots under a lease of this run (the client uses a lease
		// already in the context instead of its own, unlabelled one), so
		// that an interrupted one leaves nothing the next run's reaper
		// does not remove.
		lctx, done, err := e.client.WithLease(ctx, leases.WithExpiration(24*time.Hour),
			leases.WithLabels(map[string]string{sandbox.LabelManaged: "true", sandbox.LabelRun: e.runID}))
		if err != nil {
			return sandbox.Image{}, fmt.Errorf("image %s: create lease: %w", ref, err)
		}
		defer done(context.WithoutCancel(ctx))
		ctx = lctx
	}
	switch {
	case strings.HasPrefix(ref, OCIArchive):
		return e.importArchive(ctx, ref, strings.TrimPrefix(ref, OCIArchive))
	case strings.HasPrefix(ref, DockerArchive):
		return e.importArchive(ctx, ref, strings.TrimPrefix(ref, DockerArchive))
	default:
		return e.pull(ctx, ref)
	}
}

// Import imports an archive file (OCI layout or docker-archive tar) and
// returns the local image.
func (e *Executor) Import(ctx context.Context, path string) (sandbox.Image, error) {
	return e.Resolve(ctx, OCIArchive+path)
}

func (e *Executor) importArchive(ctx context.Context, ref, path string) (sandbox.Image, error) {
	sum, err := fileSHA256(path)
	if err != nil {
		return sandbox.Image{}, fmt.Errorf("image %s: %w", ref, err)
	}
	name := archiveRepo + ":" + sum
	unlock, err := e.lockImage(ctx, name)
	if err != nil {
		return sandbox.Image{}, fmt.Errorf("image %s: %w", ref, err)
	}
	defer unlock()
	if img, err := e.client.GetImage(ctx, name); err == nil {
		if err := e.unpack(ctx, img); err != nil {
			return sandbox.Image{}, err
		}
		return sandbox.Image{Ref: ref, Name: name, Digest: img.Target().Digest.String()}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return sandbox.Image{}, fmt.Errorf("image %s: %w", ref, err)
	}
	defer f.Close()
	// The temporary names are this process's own: another process
	// importing the same archive must not find or delete them.
	var nonce [6]byte
	rand.Read(nonce[:])
	tmpPrefix := "import.cleanroom.local/" + sum[:12] + "-" + hex.EncodeToString(nonce[:])
	imgs, err := e.client.Import(ctx, f,
		containerd.WithImageRefTranslator(func(string) string { return "" }),
		containerd.WithDigestRef(func(d digest.Digest) string { return tmpPrefix + "@" + d.String() }),
		containerd.WithSkipDigestRef(func(string) bool { return false }),
	)
	if err != nil {
		return sandbox.Image{}, fmt.Errorf("import %s: %w", path, err)
	}
	var target *ocispec.Descriptor
	for _, im := range imgs {
		if strings.HasPrefix(im.Name, tmpPrefix+"@") {
			if target != nil && target.Digest != im.Target.Digest {
				return sandbox.Image{}, fmt.Errorf("import %s: the archive holds more than one image for this platform; keep one per archive", path)
			}
			t := im.Target
			target = &t
		}
	}
	// Name the content before the import's names go: content that no
	// name refers to may be garbage collected at any moment.
	var created images.Image
	if target != nil {
		created, err = e.client.ImageService().Create(ctx, images.Image{Name: name, Target: *target})
		if errdefs.IsAlreadyExists(err) {
			created, err = e.client.ImageService().Get(ctx, name)
		}
	}
	// Drop whatever names the import created, including names the archive
	// itself carried; only our content-derived name stays.
	for _, im := range imgs {
		e.client.ImageService().Delete(ctx, im.Name)
	}
	if target == nil {
		return sandbox.Image{}, fmt.Errorf("import %s: no image for this platform in the archive", path)
	}
	if err != nil {
		return sandbox.Image{}, fmt.Errorf("import %s: %w", path, err)
	}
	img := containerd.NewImage(e.client, created)
	if err := e.unpack(ctx, img); err != nil {
		return sandbox.Image{}, err
	}
	e.log.Info("imported image", "archive", path, "digest", target.Digest.String())
	return sandbox.Image{Ref: ref, Name: name, Digest: target.Digest.String()}, nil
}

// imageLockDir holds the host-wide image locks; /run/lock is the
// conventional place, shared by every process whatever its state dir.
const imageLockDir = "/run/lock/cleanroom"

// lockImage serialises the import or pull of one image name across
// processes (runs of an agent side by side, several runners on a host):
// two imports of one archive at once would otherwise race on its names
// and its unpacked snapshots. It waits for the lock until ctx ends.
func (e *Executor) lockImage(ctx context.Context, name string) (func(), error) {
	dir := imageLockDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		dir = e.stateDir
	}
	sum := sha256.Sum256([]byte(e.ns + "\x00" + name))
	l, err := flock.Acquire(ctx, filepath.Join(dir, "image-"+hex.EncodeToString(sum[:12])+".lock"), flock.Exclusive)
	if err != nil {
		return nil, err
	}
	return func() { l.Release() }, nil
}

func (e *Executor) unpack(ctx context.Context, img containerd.Image) error {
	ok, err := img.IsUnpacked(ctx, snapshotter)
	if err == nil && ok {
		return nil
	}
	if err := img.Unpack(ctx, snapshotter); err != nil {
		return fmt.Errorf("unpack %s: %w", img.Name(), err)
	}
	return nil
}

// pull fetches a registry image client-side (a containerd 1.6 daemon has no
// transfer service). Plain HTTP is allowed only for loopback registries.
func (e *Executor) pull(ctx context.Context, ref string) (sandbox.Image, error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return sandbox.Image{}, fmt.Errorf("image %q: %w", ref, err)
	}
	name := named.String()
	unlock, err := e.lockImage(ctx, name)
	if err != nil {
		return sandbox.Image{}, fmt.Errorf("image %s: %w", ref, err)
	}
	defer unlock()
	if _, pinned := named.(reference.Digested); pinned {
		if img, err := e.client.GetImage(ctx, name); err == nil {
			if err := e.unpack(ctx, img); err != nil {
				return sandbox.Image{}, err
			}
			return sandbox.Image{Ref: ref, Name: name, Digest: img.Target().Digest.String()}, nil
		}
	}
	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchLocalhost)),
	})
	e.log.Info("pulling image", "ref", name)
	img, err := e.client.Pull(ctx, name,
		containerd.WithResolver(resolver),
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(snapshotter),
		containerd.WithImageHandler(images.HandlerFunc(func(_ context.Context, d ocispec.Descriptor) ([]ocispec.Descriptor, error) {
			if images.IsLayerType(d.MediaType) {
				e.log.Info("fetching layer", "ref", name, "digest", d.Digest.String(), "size", d.Size)
			}
			return nil, nil
		})),
	)
	if err != nil {
		return sandbox.Image{}, fmt.Errorf("pull %s: %w", name, err)
	}
	return sandbox.Image{Ref: ref, Name: name, Digest: img.Target().Digest.String()}, nil
}

// ImageInfo is one entry of the local image store.
type ImageInfo struct {
	Name   string `json:"name"`
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// Images lists the images in cleanroom's namespace.
func (e *Executor) Images(ctx context.Context) ([]ImageInfo, error) {
	ctx = e.nsctx(ctx)
	imgs, err := e.client.ListImages(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]ImageInfo, 0, len(imgs))
	for _, im := range imgs {
		size, _ := im.Size(ctx)
		out = append(out, ImageInfo{Name: im.Name(), Digest: im.Target().Digest.String(), Size: size})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// RemoveImage deletes an image by name or by digest ("sha256:…", removing
// every name that points at it). Content is garbage collected by containerd.
func (e *Executor) RemoveImage(ctx context.Context, nameOrDigest string) error {
	ctx = e.nsctx(ctx)
	imgs, err := e.Images(ctx)
	if err != nil {
		return err
	}
	found := false
	for _, im := range imgs {
		if im.Name == nameOrDigest || im.Digest == nameOrDigest {
			found = true
			if err := e.client.ImageService().Delete(ctx, im.Name, images.SynchronousDelete()); err != nil {
				return err
			}
		}
	}
	if !found {
		return fmt.Errorf("no image %q (see `cleanroom image ls`)", nameOrDigest)
	}
	return nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("archive %s does not exist", path)
		}
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
