package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cleanroom-ci/cleanroom/runner"
	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
	ctrexec "github.com/cleanroom-ci/cleanroom/sandbox/containerd"
)

// The images of an offline rebuild kit: export-materials --images writes
// each image the provenance records as an OCI archive under images/ with
// images.json; import-materials puts them into the local image store (and
// archives the pipeline names by path back into --workdir).

const kitImagesFile = "images.json"

type kitImage struct {
	// Ref is the image as the pipeline writes it; Digest what it resolved
	// to in the recorded run; File the archive in the kit (relative).
	Ref    string `json:"ref"`
	Digest string `json:"digest"`
	File   string `json:"file"`
	// Path is, for an archive reference, the archive's path relative to
	// the workspace (where import-materials --workdir restores it).
	Path string `json:"path,omitempty"`
}

// archivePath is the workspace-relative path of an archive reference, ""
// for a registry reference.
func archivePath(r *runner.Replay, ref string) string {
	ir, err := pipeline.ParseImageRef(ref)
	if err != nil || (ir.Kind != pipeline.OCIArchive && ir.Kind != pipeline.DockerArchive) {
		return ""
	}
	if filepath.IsAbs(ir.Ref) {
		return ir.Ref
	}
	return path.Join(path.Dir(r.PipelinePath), filepath.ToSlash(ir.Ref))
}

// exportImages writes the recorded images into dir/images. An archive
// image missing from the local store is imported from workdir first, and
// must resolve to the recorded digest.
func exportImages(ctx context.Context, e *ctrexec.Executor, r *runner.Replay, workdir, dir string) ([]kitImage, error) {
	if err := os.MkdirAll(filepath.Join(dir, "images"), 0o755); err != nil {
		return nil, err
	}
	refs := make([]string, 0, len(r.Images))
	for ref := range r.Images {
		refs = append(refs, ref)
	}
	sort.Strings(refs)
	var out []kitImage
	for _, ref := range refs {
		dgst := r.Images[ref]
		ki := kitImage{Ref: ref, Digest: dgst, File: "images/" + strings.TrimPrefix(dgst, "sha256:") + ".tar", Path: archivePath(r, ref)}
		if ki.Path != "" {
			src := ki.Path
			if !filepath.IsAbs(src) {
				src = filepath.Join(workdir, filepath.FromSlash(src))
			}
			if img, err := e.Import(ctx, src); err == nil && img.Digest != dgst {
				return out, fmt.Errorf("image %s: %s holds %s, the provenance records %s", ref, src, img.Digest, dgst)
			}
		}
		if err := writeImage(ctx, e, dgst, filepath.Join(dir, ki.File)); err != nil {
			if errors.Is(err, ctrexec.ErrImageNotFound) {
				return out, fmt.Errorf("image %s (%s) is not in the local image store: run the build here first, or `cleanroom image import` it", ref, dgst)
			}
			return out, fmt.Errorf("image %s: %w", ref, err)
		}
		out = append(out, ki)
	}
	data, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return out, err
	}
	return out, os.WriteFile(filepath.Join(dir, kitImagesFile), append(data, '\n'), 0o644)
}

func writeImage(ctx context.Context, e *ctrexec.Executor, dgst, file string) error {
	tmp := file + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := e.ExportImage(ctx, dgst, f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}

// importImages loads a kit's images into the local image store, checking
// each digest; registry references are named so that a digest-pinned one
// resolves locally, and archives are restored under workdir ("" leaves
// them in the kit) where the pipeline names them, unless a file is there.
func importImages(ctx context.Context, e *ctrexec.Executor, dir, workdir string, w io.Writer) (int, error) {
	data, err := os.ReadFile(filepath.Join(dir, kitImagesFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var imgs []kitImage
	if err := json.Unmarshal(data, &imgs); err != nil {
		return 0, fmt.Errorf("%s: %w", kitImagesFile, err)
	}
	n := 0
	for _, ki := range imgs {
		if strings.Contains(ki.File, "..") || filepath.IsAbs(ki.File) {
			return n, fmt.Errorf("%s: file %q is outside the kit", kitImagesFile, ki.File)
		}
		file := filepath.Join(dir, filepath.FromSlash(ki.File))
		img, err := e.Import(ctx, file)
		if err != nil {
			return n, fmt.Errorf("image %s: %w", ki.Ref, err)
		}
		if img.Digest != ki.Digest {
			return n, fmt.Errorf("image %s: %s holds %s, not the recorded %s", ki.Ref, ki.File, img.Digest, ki.Digest)
		}
		switch {
		case ki.Path == "":
			if err := e.NameImage(ctx, ki.Ref, ki.Digest); err != nil {
				return n, fmt.Errorf("image %s: %w", ki.Ref, err)
			}
		case workdir != "" && !filepath.IsAbs(ki.Path) && !strings.HasPrefix(path.Clean(ki.Path), ".."):
			dst := filepath.Join(workdir, filepath.FromSlash(ki.Path))
			if _, err := os.Lstat(dst); err == nil {
				fmt.Fprintf(w, "image %s: %s exists, left as it is\n", ki.Ref, dst)
				break
			}
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return n, err
			}
			if err := copyFileTo(file, dst); err != nil {
				return n, err
			}
			fmt.Fprintf(w, "image %s: restored to %s\n", ki.Ref, dst)
		}
		n++
	}
	return n, nil
}

func copyFileTo(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
