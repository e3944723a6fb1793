package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cleanroom-ci/cleanroom/runner"
	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
	ctrexec "github.com/cleanroom-ci/cleanroom/sandbox/containerd"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress/store"
)

// materialsOptions are the run flags about what a build downloads: TLS
// inspection, the content-addressed store, and offline replays.
type materialsOptions struct {
	inspect    bool
	cache      string
	cacheMode  string
	cacheMax   string
	upstreamCA []string
	replay     string
	offline    bool
}

func (o *materialsOptions) addFlags(f *pflag.FlagSet) {
	f.BoolVar(&o.inspect, "inspect", false, "TLS inspection for every step that does not set egress.inspect: false itself: terminate HTTPS with a per-run CA and record the URL and sha256 of every body (as egress.inspect: true)")
	f.StringVar(&o.cache, "cache", store.DefaultDir, "content-addressed store that keeps every downloaded body (by sha256), for replays and egress.cache: prefer")
	f.StringVar(&o.cacheMode, "cache-mode", "", "record (keep bodies), prefer (also answer immutable URLs from the store) or off; default: the pipeline's egress.cache, else record")
	f.StringVar(&o.cacheMax, "cache-max", "10GiB", "size bound of the store; least recently used bodies are evicted beyond it")
	f.StringArrayVar(&o.upstreamCA, "upstream-ca", nil, "PEM file of a CA to trust for https upstreams, in addition to the host's roots (a private mirror; repeatable)")
	f.StringVar(&o.replay, "replay", "", "rebuild with no network from the bodies this provenance (provenance.intoto.json) lists, and compare the artifacts with its subjects")
	f.BoolVar(&o.offline, "offline", false, "no upstream at all: answer only from the store (--cache)")
}

// materialsSetup is what the flags open.
type materialsSetup struct {
	store       *store.Store
	upstreamTLS *tls.Config
	replay      *runner.Replay
}

func (o *materialsOptions) open(log hclog.Logger) (*materialsSetup, error) {
	var m materialsSetup
	if o.cacheMode != "" {
		if _, err := egress.ParseCacheMode(o.cacheMode); err != nil {
			return nil, fmt.Errorf("--cache-mode: %w", err)
		}
	}
	max, err := pipeline.ParseSize(o.cacheMax)
	if err != nil {
		return nil, fmt.Errorf("--cache-max: %w", err)
	}
	needStore := o.offline || o.replay != "" || o.cacheMode == pipeline.EgressCachePrefer
	if o.replay != "" {
		if m.replay, err = loadReplay("--replay", o.replay); err != nil {
			return nil, err
		}
		if n := len(m.replay.Tunnels); n > 0 {
			log.Warn("the recorded run has opaque TLS tunnels (recorded without egress.inspect); a replay cannot serve them", "count", n, "first", m.replay.Tunnels[0])
		}
	}
	if o.cacheMode != pipeline.EgressCacheOff || needStore {
		if o.cache == "" {
			if needStore {
				return nil, errors.New("--cache DIR is needed for --offline, --replay and --cache-mode prefer")
			}
		} else if m.store, err = store.Open(o.cache, store.Options{MaxBytes: max}); err != nil {
			if needStore {
				return nil, err
			}
			log.Warn("the store is unavailable; downloaded bodies are not kept", "dir", o.cache, "error", err)
		}
	}
	if len(o.upstreamCA) > 0 {
		roots, err := x509.SystemCertPool()
		if err != nil || roots == nil {
			roots = x509.NewCertPool()
		}
		for _, f := range o.upstreamCA {
			pem, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("--upstream-ca: %w", err)
			}
			if !roots.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--upstream-ca %s: no PEM certificate in it", f)
			}
		}
		m.upstreamTLS = &tls.Config{RootCAs: roots}
	}
	return &m, nil
}

// reportMaterials prints the lockfile check and the replay verdict.
func reportMaterials(w io.Writer, res *runner.Result) {
	if lc := res.LockfileCheck; lc != nil && (len(lc.Lockfiles) > 0 || len(lc.Undeclared)+len(lc.Mismatches)+len(lc.Unverified) > 0) {
		files := strings.Join(lc.Lockfiles, ", ")
		if files == "" {
			files = "none found"
		}
		fmt.Fprintf(w, "lockfiles (%s): %d fetched packages match, %d undeclared, %d hash mismatches, %d unverified\n",
			files, lc.Checked, len(lc.Undeclared), len(lc.Mismatches), len(lc.Unverified))
		for _, f := range lc.Undeclared {
			fmt.Fprintf(w, "undeclared fetch in step %s: %s %s@%s (%s)\n", f.Step, f.Ecosystem, f.Package, f.Version, f.URL)
		}
		for _, f := range lc.Mismatches {
			fmt.Fprintf(w, "hash mismatch in step %s: %s %s@%s declared %s, fetched %s (%s)\n", f.Step, f.Ecosystem, f.Package, f.Version, f.Declared, f.Fetched, f.URL)
		}
		for _, f := range lc.Unverified {
			fmt.Fprintf(w, "unverified fetch in step %s: %s %s@%s: %s\n", f.Step, f.Ecosystem, f.Package, f.Version, f.Reason)
		}
	}
	if r := res.Replay; r != nil {
		if r.Reproduced {
			fmt.Fprintf(w, "replay: reproduced (the artifacts are identical to those of %s)\n", r.Provenance)
			return
		}
		if len(r.Differences) > 0 {
			fmt.Fprintf(w, "replay: artifacts differ from %s:\n", r.Provenance)
		} else {
			fmt.Fprintf(w, "replay: not reproduced from %s: the artifacts are identical, the inputs are not:\n", r.Provenance)
		}
		for _, d := range r.Differences {
			fmt.Fprintf(w, "  differs: %s recorded %s replayed %s\n", d.Name, digestOrNone(d.Recorded), digestOrNone(d.Replayed))
		}
		if r.WorkspaceDiffers {
			fmt.Fprintf(w, "  the workspace differs from the recorded one (recorded sha256:%s, this run sha256:%s): another checkout or local changes\n", r.RecordedWorkspace, r.ReplayedWorkspace)
		}
		for _, im := range r.Images {
			fmt.Fprintf(w, "  image %s is %s, recorded %s\n", im.Ref, im.Used, im.Recorded)
		}
	}
}

func digestOrNone(d string) string {
	if d == "" {
		return "(none)"
	}
	return "sha256:" + d
}

func newExportMaterialsCommand(g *globalOptions) *cobra.Command {
	var cache, output, workdir string
	var withImages bool
	cmd := &cobra.Command{
		Use:   "export-materials PROVENANCE DIR",
		Short: "Copy the downloaded bodies a provenance lists from the store into a directory",
		Long: `Export-materials copies every body the provenance's resolvedDependencies list
by sha256 (each verified against its digest) and their index entries from the
store into DIR, with a materials.json listing them. Move DIR to another
machine and run import-materials there; then ` + "`cleanroom run --replay PROVENANCE`" + `
rebuilds with no network. A body missing from the store is reported and the
command fails after exporting the others.`,
		Example: `  cleanroom export-materials .cleanroom/provenance.intoto.json /media/usb/materials`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := loadReplay("export-materials", args[0])
			if err != nil {
				return systemFailure(err)
			}
			st, err := store.Open(cache, store.Options{})
			if err != nil {
				return systemFailure(needsRoot("export-materials", err))
			}
			rep, err := runner.ExportMaterials(st, r, args[1])
			var imgs []kitImage
			if withImages && err == nil {
				// The kit is one directory: the provenance and the images too.
				err = withRunExecutor(cmd.Context(), "export-materials", g, true, func(e *ctrexec.Executor) error {
					var ierr error
					imgs, ierr = exportImages(cmd.Context(), e, r, workdir, args[1])
					return ierr
				})
				if err == nil {
					err = copyFileTo(args[0], filepath.Join(args[1], filepath.Base(args[0])))
					if errors.Is(err, os.ErrExist) {
						err = nil
					}
				}
			}
			printJSONOrText(cmd.OutOrStdout(), output, struct {
				runner.ExportReport
				Images []kitImage `json:"images,omitempty"`
			}{rep, imgs}, func(w io.Writer) {
				fmt.Fprintf(w, "exported %s (%d bytes) to %s\n", plural(rep.Exported, "body", "bodies"), rep.Bytes, args[1])
				for _, im := range imgs {
					fmt.Fprintf(w, "exported image %s (%s) to %s\n", im.Ref, im.Digest, im.File)
				}
				for _, m := range rep.Missing {
					fmt.Fprintf(w, "missing: %s\n", m)
				}
				for _, t := range rep.Tunnels {
					fmt.Fprintf(w, "not replayable (opaque tunnel, no content recorded): %s\n", t)
				}
			})
			if err != nil {
				return systemFailure(err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&cache, "cache", store.DefaultDir, "the store to export from")
	cmd.Flags().BoolVar(&withImages, "images", false, "also export every image the provenance records (OCI archives from the local image store, checked against the recorded digests) and the provenance itself: one directory is then a complete offline rebuild kit")
	cmd.Flags().StringVar(&workdir, "workdir", ".", "with --images: the workspace the recorded run built, where image archives named by path are found")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}

func newImportMaterialsCommand(g *globalOptions) *cobra.Command {
	var cache, output, workdir string
	cmd := &cobra.Command{
		Use:   "import-materials DIR",
		Short: "Add the bodies of an export-materials directory to the store",
		Long: `Import-materials copies every body of DIR (written by export-materials) into
the store, verifying each against its sha256 on the way; a body that does not
match is refused. Index entries come along for the bodies imported.`,
		Example: `  cleanroom import-materials /media/usb/materials && cleanroom run --replay provenance.intoto.json`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := store.Open(cache, store.Options{})
			if err != nil {
				return systemFailure(needsRoot("import-materials", err))
			}
			rep, err := runner.ImportMaterials(st, args[0])
			printJSONOrText(cmd.OutOrStdout(), output, rep, func(w io.Writer) {
				fmt.Fprintf(w, "imported %s (%d bytes) and %s into %s\n", plural(rep.Imported, "body", "bodies"), rep.Bytes, plural(rep.Entries, "index entry", "index entries"), st.Dir())
			})
			if err != nil {
				return systemFailure(err)
			}
			if _, err := os.Stat(filepath.Join(args[0], kitImagesFile)); err == nil {
				return withRunExecutor(cmd.Context(), "import-materials", g, true, func(e *ctrexec.Executor) error {
					n, err := importImages(cmd.Context(), e, args[0], workdir, cmd.OutOrStdout())
					fmt.Fprintf(cmd.OutOrStdout(), "imported %d images\n", n)
					return err
				})
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&cache, "cache", store.DefaultDir, "the store to import into")
	cmd.Flags().StringVar(&workdir, "workdir", "", "restore the kit's image archives that the pipeline names by path into this workspace (files already there are left alone)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}

func printJSONOrText(w io.Writer, format string, v any, text func(io.Writer)) {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(v)
		return
	}
	text(w)
}

// plural renders a count with its noun: "1 body", "2 bodies".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// loadReplay reads the provenance of a run to replay. A file that is not
// a statement at all (a pipeline file passed by mistake, say) is told what
// is expected rather than shown a JSON syntax error.
func loadReplay(what, path string) (*runner.Replay, error) {
	r, err := runner.LoadReplay(path)
	if err == nil {
		return r, nil
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return nil, fmt.Errorf("%s: %w", what, pe)
	}
	const want = "expects a provenance file (provenance.intoto.json, which a run writes to its --out directory)"
	if b, rerr := os.ReadFile(path); rerr == nil && !bytes.HasPrefix(bytes.TrimSpace(b), []byte("{")) {
		return nil, fmt.Errorf("%s %s: not a provenance file: %s %s", what, path, what, want)
	}
	return nil, fmt.Errorf("%s %s: %s: %w", what, path, want, err)
}
