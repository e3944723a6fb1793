package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cleanroom-ci/cleanroom/runner"
	"github.com/cleanroom-ci/cleanroom/runner/rebuild"
	"github.com/cleanroom-ci/cleanroom/runner/vary"
)

// rebuildOptions are the flags only `cleanroom rebuild` has.
type rebuildOptions struct {
	vary       []string
	against    string
	noExplain  bool
	diffoscope string
}

func newRebuildCommand(g *globalOptions) *cobra.Command {
	o := &runOptions{rebuild: &rebuildOptions{}}
	cmd := runCommand(g, o, &cobra.Command{
		Use:   "rebuild [flags]",
		Short: "Build again from the same inputs, varying what should not matter, and compare",
		Long: `Rebuild builds the pipeline once as a reference (build-0) and then --check
more times (default 1), each in a fresh workspace, and compares every artifact's
sha256 with the reference's. With --against PROVENANCE it compares with that
recorded run instead of building a reference, and with --offline as well it
builds from the recorded materials alone (no network; the store must hold them,
see import-materials).

The checking builds vary what a reproducible build must not depend on (all by
default; --vary to choose): ` + strings.Join(vary.All, ", ") + `.
SOURCE_DATE_EPOCH is set for every step from the source (the commit time of
HEAD) or the recorded provenance.

Every build keeps its outputs side by side in --out (default
<workspace>/.cleanroom/rebuild): build-N/ has the run's logs, provenance and
artifacts/. On a difference the command exits 1, names the differing
artifacts and the first step whose workspace differs, saves diffoscope's
report on each differing artifact when diffoscope is installed, and (unless
--no-explain) builds once with nothing varied and once per variation to name
the cause. The report is report.txt and report.json.`,
		Example: `  # build twice more with every variation, compare with a reference build
  cleanroom rebuild --check 2

  # only the workspace path and the uid
  cleanroom rebuild --vary workspace-path,uid

  # everything but the locale
  cleanroom rebuild --vary all,-locale

  # rebuild a release offline from its recorded materials and compare
  cleanroom import-materials /media/usb/kit
  cleanroom rebuild --against /media/usb/kit/provenance.intoto.json --offline`,
	})
	f := cmd.Flags()
	f.StringSliceVar(&o.rebuild.vary, "vary", []string{"all"}, "variations of the checking builds: all, none, or names ("+strings.Join(vary.All, ", ")+"), a leading - removes one")
	f.StringVar(&o.rebuild.against, "against", "", "compare with this recorded provenance instead of a reference build (its recorded flags and SOURCE_DATE_EPOCH are reused)")
	f.BoolVar(&o.rebuild.noExplain, "no-explain", false, "on a difference, do not build again per variation to find the cause")
	f.StringVar(&o.rebuild.diffoscope, "diffoscope", "", "diffoscope program (default: diffoscope on PATH if installed; - to never run it)")
	return cmd
}

// addReproFlags adds --check, --vary-check and --source-date-epoch.
func (o *runOptions) addReproFlags(f *pflag.FlagSet) {
	if o.rebuild != nil {
		f.IntVar(&o.check, "check", 1, "how many builds to compare with the reference")
	} else {
		f.IntVar(&o.check, "check", 0, "after the run, build N more times in fresh workspaces and compare the artifacts (as cleanroom rebuild; outputs in <out>/check)")
		f.StringSliceVar(&o.checkVary, "check-vary", []string{"none"}, "variations of the --check builds (see cleanroom rebuild --vary)")
	}
	f.StringVar(&o.sdeFlag, "source-date-epoch", "", "SOURCE_DATE_EPOCH for every step, in seconds (default: the commit time of HEAD, or the replayed provenance's)")
}

// parseRepro checks the reproducibility flags.
func (o *runOptions) parseRepro() error {
	if o.sdeFlag != "" {
		n, err := strconv.ParseInt(o.sdeFlag, 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("--source-date-epoch %q: want seconds since 1970", o.sdeFlag)
		}
		o.sourceDateEpoch = &n
	}
	if o.check < 0 || (o.rebuild != nil && o.check < 1) {
		return fmt.Errorf("--check %d: want a positive number of builds", o.check)
	}
	if (o.check > 0 || o.rebuild != nil) && o.reuseWorkspace {
		return errors.New("--reuse-workspace cannot be combined with --check or rebuild: every build needs a fresh workspace")
	}
	if o.rebuild != nil {
		if o.materials.replay != "" {
			return errors.New("rebuild: use --against PROVENANCE (with --offline to build from its recorded materials) instead of --replay")
		}
		if o.rebuild.against != "" && o.materials.offline {
			// Offline from the recorded materials: the replay machinery
			// serves exactly what the provenance lists.
			o.materials.replay, o.materials.offline = o.rebuild.against, false
		}
	}
	return nil
}

// applyRecordedFlags reuses the flags a replayed or compared provenance
// records (allow rules, steps, egress mode, module proxy, inspection) for
// every flag not given on the command line.
func (o *runOptions) applyRecordedFlags(log hclog.Logger) error {
	path := o.materials.replay
	if o.rebuild != nil && o.rebuild.against != "" {
		path = o.rebuild.against
	}
	if path == "" || o.flags == nil {
		return nil
	}
	r, err := runner.LoadReplay(path)
	if err != nil {
		return nil // opening the replay or comparison reports it, with the fix
	}
	var reused []string
	set := func(name string, apply func(v []string)) {
		if v, ok := r.Flags[name]; ok && !o.flags.Changed(name) {
			apply(v)
			reused = append(reused, "--"+name)
		}
	}
	set("allow", func(v []string) { o.allow = v })
	set("step", func(v []string) { o.steps = v })
	set("egress-mode", func(v []string) { o.egressMode = v[0] })
	set("goproxy-upstream", func(v []string) { o.goproxy = v[0] })
	set("inspect", func(v []string) { o.materials.inspect = v[0] == "true" })
	set("require-inspection", func(v []string) { o.requireInspection = v })
	if len(reused) > 0 {
		log.Info("reusing the flags the provenance records", "provenance", path, "flags", strings.Join(reused, " "))
	}
	return nil
}

// runRebuild is `cleanroom rebuild`; the report is left in o.rebuildReport.
func runRebuild(ctx context.Context, o *runOptions, cfg runner.Config, mat *materialsSetup) error {
	names, err := vary.Parse(o.rebuild.vary)
	if err != nil {
		return systemFailure(fmt.Errorf("--vary: %w", err))
	}
	against := mat.replay
	if against == nil && o.rebuild.against != "" {
		if against, err = loadReplay("--against", o.rebuild.against); err != nil {
			return systemFailure(err)
		}
	}
	// Whatever an ordinary run left in the default output directory is
	// not source either.
	cfg.ExcludeDirs = append(cfg.ExcludeDirs, filepath.Join(cfg.Workspace, ".cleanroom"))
	rep, err := rebuild.Run(ctx, rebuild.Options{
		Base: cfg, Out: cfg.OutDir, Check: o.check, Vary: names, Against: against,
		Explain: !o.rebuild.noExplain, Diffoscope: o.rebuild.diffoscope, Status: os.Stderr,
	})
	return rebuildOutcome(ctx, o, rep, err)
}

// runCheck is `cleanroom run --check N` after a successful run: the run is
// the reference.
func runCheck(ctx context.Context, o *runOptions, cfg runner.Config, res *runner.Result) error {
	names, err := vary.Parse(o.checkVary)
	if err != nil {
		return systemFailure(fmt.Errorf("--check-vary: %w", err))
	}
	cfg.ExcludeDirs = append(cfg.ExcludeDirs, cfg.OutDir)
	cfg.Replay = nil // the run itself was the comparison with a provenance
	rep, err := rebuild.Run(ctx, rebuild.Options{
		Base: cfg, Out: filepath.Join(cfg.OutDir, "check"), Check: o.check, Vary: names, Reference: res,
		Explain: true, Status: os.Stderr,
	})
	return rebuildOutcome(ctx, o, rep, err)
}

// rebuildOutcome keeps the report for printing and maps the error to an
// exit status.
func rebuildOutcome(ctx context.Context, o *runOptions, rep *rebuild.Report, err error) error {
	if rep != nil && (err == nil || errors.Is(err, rebuild.ErrNotReproduced)) {
		o.rebuildReport = rep
	}
	var failed *rebuild.BuildFailed
	switch {
	case errors.Is(err, runner.ErrCancelled) || (err != nil && ctx.Err() != nil):
		return systemFailure(errors.New("rebuild cancelled; every sandbox it started has been removed"))
	case errors.As(err, &failed):
		return buildFailure(err)
	case errors.Is(err, rebuild.ErrNotReproduced):
		return buildFailure(errors.New("the builds are not reproducible; see the report above"))
	case err != nil:
		return systemFailure(err)
	}
	return nil
}

// printRebuild prints the rebuild's report; after run --check, the run's
// result first (as JSON: one object with "run" and "check").
func printRebuild(w io.Writer, o *runOptions, res *runner.Result) {
	if o.output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if res != nil {
			enc.Encode(struct {
				Run   runJSON         `json:"run"`
				Check *rebuild.Report `json:"check"`
			}{runOutcome(res, nil), o.rebuildReport})
			return
		}
		enc.Encode(o.rebuildReport)
		return
	}
	if res != nil {
		report(w, res)
	}
	rebuild.WriteText(w, o.rebuildReport)
}

func newDiffCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "diff PROVENANCE_A PROVENANCE_B",
		Short: "Compare two provenances of one pipeline and find the first step where they diverge",
		Long: `Diff compares two provenance files written by cleanroom run, without building:
the inputs (pipeline file, workspace, SOURCE_DATE_EPOCH, images, fetched
bodies), the workspace tree digest before and after each step (byproducts
steps/<name>/workspace.before and .after) in step order, and the artifacts.
It names the first step that left a different workspace. Exit status: 0 when
nothing differs, 1 when something does, 2 when a file cannot be read.`,
		Example: `  cleanroom diff release.intoto.json .cleanroom/provenance.intoto.json`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := rebuild.DiffProvenances(args[0], args[1])
			if err != nil {
				return systemFailure(err)
			}
			printJSONOrText(cmd.OutOrStdout(), output, d, func(w io.Writer) {
				if d.Same {
					fmt.Fprintln(w, "diff: the same inputs, workspaces after every step, and artifacts")
					return
				}
				for _, in := range d.Inputs {
					fmt.Fprintf(w, "input differs: %s\n", in)
				}
				if d.Divergence != nil {
					fmt.Fprintf(w, "first diverging step: %s\n", d.Divergence.Reason)
				} else {
					fmt.Fprintln(w, "every step left the same workspace")
				}
				for _, a := range d.Artifacts {
					fmt.Fprintf(w, "artifact differs: %s %s vs %s\n", a.Name, digestOrNone(a.Recorded), digestOrNone(a.Replayed))
				}
			})
			if !d.Same {
				return buildFailure(nil)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}
