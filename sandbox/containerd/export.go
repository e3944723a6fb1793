package ctrexec

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/images/archive"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
)

// ErrImageNotFound is returned by ExportImage when no local image has the
// digest.
var ErrImageNotFound = errors.New("no local image has this digest")

// ExportImage writes the local image whose manifest (or index) digest is
// dgst as an OCI archive to w, this platform's content only: what an
// offline rebuild kit carries (export-materials --images).
func (e *Executor) ExportImage(ctx context.Context, dgst string, w io.Writer) error {
	ctx = e.nsctx(ctx)
	imgs, err := e.client.ImageService().List(ctx)
	if err != nil {
		return err
	}
	for _, im := range imgs {
		if im.Target.Digest.String() == dgst {
			return e.client.Export(ctx, w,
				archive.WithImage(e.client.ImageService(), im.Name),
				archive.WithPlatform(platforms.DefaultStrict()),
				archive.WithSkipMissing(e.client.ContentStore()))
		}
	}
	return fmt.Errorf("%s: %w", dgst, ErrImageNotFound)
}

// NameImage gives the local image with digest dgst (imported from a kit)
// the registry reference a pipeline uses, so that a digest-pinned reference
// resolves locally without a registry.
func (e *Executor) NameImage(ctx context.Context, ref, dgst string) error {
	ctx = e.nsctx(ctx)
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return err
	}
	imgs, err := e.client.ImageService().List(ctx)
	if err != nil {
		return err
	}
	for _, im := range imgs {
		if im.Target.Digest.String() == dgst {
			_, err := e.client.ImageService().Create(ctx, images.Image{Name: named.String(), Target: im.Target})
			if errdefs.IsAlreadyExists(err) {
				_, err = e.client.ImageService().Update(ctx, images.Image{Name: named.String(), Target: im.Target})
			}
			return err
		}
	}
	return fmt.Errorf("%s: %w", dgst, ErrImageNotFound)
}
