package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/cleanroom-ci/cleanroom/internal/runlock"
	"github.com/cleanroom-ci/cleanroom/runner"
	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
	ctrexec "github.com/cleanroom-ci/cleanroom/sandbox/containerd"
	"github.com/cleanroom-ci/cleanroom/sandbox/imagepack"
)

func newImageCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Manage the images steps run in",
		Long: `Steps run in OCI images kept in containerd's "cleanroom" namespace. A pipeline
names them as registry references or as archives (oci-archive:PATH,
docker-archive:PATH), which cleanroom imports on first use, named by the
archive's sha256. These commands inspect and manage that store, and pack a
root filesystem directory into an image archive without any registry.`,
	}
	cmd.AddCommand(newImageImportCommand(g), newImageLsCommand(g), newImageRmCommand(g), newImagePackCommand())
	return cmd
}

func withExecutor(ctx context.Context, command string, g *globalOptions, fn func(*ctrexec.Executor) error) error {
	return withRunExecutor(ctx, command, g, false, fn)
}

// withRunExecutor is withExecutor; asRun makes the command a run of its
// own (a run lock, its leases labelled with it), so that what an
// interrupted import leaves is reaped by the next run, and what dead runs
// left is reaped first.
func withRunExecutor(ctx context.Context, command string, g *globalOptions, asRun bool, fn func(*ctrexec.Executor) error) error {
	log, err := g.logger()
	if err != nil {
		return systemFailure(err)
	}
	runID := ""
	if asRun {
		lock, err := runlock.Acquire(runner.LocksDir(g.stateDir))
		if err != nil {
			return systemFailure(needsRoot(command, err))
		}
		defer lock.Release()
		runID = lock.ID
	}
	e, err := newExecutor(ctx, g, log, runID)
	if err != nil {
		return systemFailure(needsRoot(command, err))
	}
	defer e.Close()
	if err := fn(e); err != nil {
		return systemFailure(err)
	}
	return nil
}

func newImageImportCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "import ARCHIVE|REF...",
		Short: "Import image archives or pull registry images into the store",
		Long: `Import reads an argument as an archive when it names a file or starts with
oci-archive: or docker-archive:, and as a registry reference to pull only when
it names its registry host (HOST[:PORT]/PATH[:TAG][@DIGEST]), so that a
mistyped file name is an error and never a pull.`,
		Example: `  cleanroom image import images/builder.tar
  cleanroom image import docker-archive:build/app.tar
  cleanroom image import 127.0.0.1:5000/builder:1
  cleanroom image import docker.io/library/busybox:1.36`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			refs := make([]string, len(args))
			for i, a := range args {
				ref, err := importRef(a)
				if err != nil {
					return systemFailure(err)
				}
				refs[i] = ref
			}
			return withRunExecutor(cmd.Context(), "image import", g, true, func(e *ctrexec.Executor) error {
				progress := g.progress()
				for i, ref := range refs {
					done := func() {}
					if progress != nil {
						work := "pulling"
						if ref != args[i] || strings.HasPrefix(ref, "oci-archive:") || strings.HasPrefix(ref, "docker-archive:") {
							work = "importing"
						}
						done = progress.Begin(work + " " + args[i])
					}
					img, err := e.Resolve(cmd.Context(), ref)
					done()
					if err != nil {
						return err
					}
					fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\n", img.Name, img.Digest)
				}
				return nil
			})
		},
	}
}

// importRef turns an `image import` argument into a reference for
// Executor.Resolve. An existing file is an OCI archive; a registry reference
// must name its registry host, because a short name ("nope.tar", "builder")
// is far more often a mistyped path than an image on Docker Hub.
func importRef(arg string) (string, error) {
	ref, err := pipeline.ParseImageRef(arg)
	if err == nil && ref.Kind != pipeline.Registry {
		if _, err := os.Stat(ref.Ref); err != nil {
			return "", fmt.Errorf("image import %s: %s: no such file", arg, ref.Ref)
		}
		return ref.String(), nil
	}
	if fi, serr := os.Stat(arg); serr == nil && !fi.IsDir() {
		return pipeline.ImageRef{Kind: pipeline.OCIArchive, Ref: arg}.String(), nil
	}
	if err == nil && registryHost(ref.Name) {
		return ref.String(), nil
	}
	return "", fmt.Errorf("image import %s: no such file; a registry image is pulled only when written with its registry host, e.g. docker.io/library/busybox:1.36 or 127.0.0.1:5000/builder:1", arg)
}

// registryHost reports whether a repository name starts with a registry
// host, by the rule ParseImageRef (and docker) use.
func registryHost(name string) bool {
	first, _, ok := strings.Cut(name, "/")
	return ok && (strings.ContainsAny(first, ".:") || first == "localhost")
}

func newImageLsCommand(g *globalOptions) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List images in the store",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withExecutor(cmd.Context(), cmd.CommandPath()[len("cleanroom "):], g, func(e *ctrexec.Executor) error {
				imgs, err := e.Images(cmd.Context())
				if err != nil {
					return err
				}
				return printImages(cmd.OutOrStdout(), output, imgs)
			})
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}

func printImages(w io.Writer, output string, imgs []ctrexec.ImageInfo) error {
	if output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(imgs)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tDIGEST\tSIZE")
	for _, im := range imgs {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", im.Name, im.Digest, pipeline.FormatSize(im.Size))
	}
	return tw.Flush()
}

func newImageRmCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME|DIGEST...",
		Short: "Remove images from the store",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withExecutor(cmd.Context(), cmd.CommandPath()[len("cleanroom "):], g, func(e *ctrexec.Executor) error {
				for _, a := range args {
					if err := e.RemoveImage(cmd.Context(), a); err != nil {
						return err
					}
				}
				return nil
			})
		},
	}
}

func newImagePackCommand() *cobra.Command {
	var out, name, format string
	var cmdArgs []string
	cmd := &cobra.Command{
		Use:   "pack ROOTFS_DIR -o ARCHIVE",
		Short: "Pack a root filesystem directory into a reproducible image archive",
		Long: `Pack writes the directory as a one-layer image with zero timestamps and root
ownership, so the same tree always gives the same digest. Use it to build
step images from Debian packages (debootstrap, dpkg -x) without a registry.`,
		Example: `  cleanroom image pack ./rootfs -o images/builder.tar`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return systemFailure(fmt.Errorf("-o ARCHIVE is required"))
			}
			if err := checkOutputDir(out); err != nil {
				return systemFailure(err)
			}
			img, err := imagepack.Image(args[0], imagepack.Options{Cmd: cmdArgs})
			if err != nil {
				return systemFailure(err)
			}
			switch format {
			case "oci":
				err = imagepack.WriteOCIArchive(out, img, name)
			case "docker":
				err = imagepack.WriteDockerArchive(out, img, name)
			default:
				err = fmt.Errorf("--format %q: use oci or docker", format)
			}
			if err != nil {
				return systemFailure(err)
			}
			d, _ := img.Digest()
			fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\n", out, d)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "archive to write")
	cmd.Flags().StringVar(&name, "name", "localhost/cleanroom-image:latest", "name recorded in the archive")
	cmd.Flags().StringVar(&format, "format", "oci", "archive format: oci (oci-archive:) or docker (docker-archive:)")
	cmd.Flags().StringArrayVar(&cmdArgs, "cmd", []string{"/bin/sh"}, "image default command")
	return cmd
}

// checkOutputDir fails early, naming the directory, when the directory an
// output file goes into does not exist: the write itself would only report
// its temporary file.
func checkOutputDir(out string) error {
	dir := filepath.Dir(out)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("-o %s: directory %s does not exist (create it first)", out, dir)
	case err != nil:
		return fmt.Errorf("-o %s: %w", out, err)
	case !fi.IsDir():
		return fmt.Errorf("-o %s: %s is not a directory", out, dir)
	}
	return nil
}
