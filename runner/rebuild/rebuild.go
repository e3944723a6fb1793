// Package rebuild builds a pipeline again from the same inputs and compares:
// `cleanroom rebuild` and `cleanroom run --check N`. Each build runs in a
// fresh workspace with its outputs in a directory of its own, so nothing is
// overwritten; later builds vary what a reproducible build must not depend on
// (runner/vary). On a difference it names the artifacts, the first step whose
// workspace differs, runs diffoscope when it is installed, and, when several
// variations were on, builds once more per variation to name the cause.
package rebuild

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cleanroom-ci/cleanroom/internal/runlock"
	"github.com/cleanroom-ci/cleanroom/runner"
	"github.com/cleanroom-ci/cleanroom/runner/manifest"
	"github.com/cleanroom-ci/cleanroom/runner/vary"
)

// Options are one rebuild.
type Options struct {
	// Base is the run as the user asked for it; OutDir, RunID, Vary,
	// VaryBuild, ArtifactsDir and Signer are set per build.
	Base runner.Config
	// Out receives build-0 (the reference), build-1 …, report.json,
	// report.txt and diffoscope/.
	Out string
	// Check is how many builds to compare with the reference (at least 1).
	Check int
	// Vary names the variations of the checking builds (vary.Parse).
	Vary []string
	// Against compares with a recorded provenance instead of building a
	// reference first; Base.Replay may be it too (offline).
	Against *runner.Replay
	// Reference, when set, is an ordinary run already made (run --check):
	// it is the reference, and no build-0 is made.
	Reference *runner.Result
	// Explain builds once more per variation when a varied build differs,
	// to name the variation that causes it.
	Explain bool
	// Diffoscope is the diffoscope program ("" looks it up on PATH; "-"
	// never runs it).
	Diffoscope string
	// Status receives progress lines (nil: none).
	Status io.Writer
}

// Report is what a rebuild found. It is written to report.json.
type Report struct {
	// Reproduced: every build produced the reference's artifacts.
	Reproduced bool `json:"reproduced"`
	// Reference is "build-0" or the provenance compared with.
	Reference string `json:"reference"`
	// ReferenceArtifacts are the reference's subjects.
	ReferenceArtifacts []manifest.Subject `json:"referenceArtifacts"`
	Builds             []Build            `json:"builds"`
	// Causes are the variations (or "none") that alone made a build
	// differ, found by Explain.
	Causes []Cause `json:"causes,omitempty"`
	// NotVaried lists variations that could not be applied, with why.
	NotVaried map[string]string `json:"notVaried,omitempty"`
	// Out is the directory holding every build's outputs side by side.
	Out string `json:"outputs"`
	// Diffoscope are the reports written for differing artifacts; a note
	// says why there are none when diffoscope is not installed.
	Diffoscope     []DiffoscopeReport `json:"diffoscope,omitempty"`
	DiffoscopeNote string             `json:"diffoscopeNote,omitempty"`
}

// Build is one build and how it compared.
type Build struct {
	Name string `json:"name"` // build-1, explain-uid, …
	Dir  string `json:"dir"`
	// Varied are the variations on, Values what they set.
	Varied []string `json:"varied"`
	Values []string `json:"values,omitempty"`
	// Failed names a step that failed (the build is then a difference).
	Failed      string                      `json:"failedStep,omitempty"`
	Artifacts   []manifest.Subject          `json:"artifacts"`
	Reproduced  bool                        `json:"reproduced"`
	Differences []runner.ArtifactDifference `json:"differences,omitempty"`
	// Divergence is the first step whose workspace differs from the
	// reference's (set even when the artifacts are the same: then only
	// byproducts differ).
	Divergence *Divergence `json:"firstDifferingStep,omitempty"`
	// Replay is the offline comparison with the recorded provenance.
	Replay *runner.ReplayResult `json:"replay,omitempty"`
}

// Cause is a variation found to change the artifacts on its own.
type Cause struct {
	Variation string   `json:"variation"` // a vary name, or "none"
	Build     string   `json:"build"`
	Artifacts []string `json:"artifacts"`
	Reason    string   `json:"reason"`
}

// DiffoscopeReport is diffoscope's text report on one artifact.
type DiffoscopeReport struct {
	Artifact string `json:"artifact"`
	Build    string `json:"build"`
	Report   string `json:"report"`
	Error    string `json:"error,omitempty"`
}

// ErrNotReproduced is returned (with the report) when a build differs.
var ErrNotReproduced = errors.New("not reproduced")

// reference is what builds are compared with.
type reference struct {
	name     string
	dir      string // artifacts directory ("" for a provenance)
	subjects []manifest.Subject
	steps    []runner.StepDigests
	cmp      *runner.Replay // Compare() over the subjects
}

// Run makes the builds and compares them. A build that cannot run (an
// infrastructure failure, cancellation) is an error; differences are in the
// report, with ErrNotReproduced.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Check < 1 {
		o.Check = 1
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	if err := clearOut(o.Out); err != nil {
		return nil, err
	}
	rep := &Report{Out: o.Out}
	ref, err := o.reference(ctx)
	if err != nil {
		return nil, err
	}
	rep.Reference, rep.ReferenceArtifacts = ref.name, ref.subjects
	for i := 1; i <= o.Check; i++ {
		plan := vary.For(o.Vary, i)
		for k, v := range plan.Skipped {
			if rep.NotVaried == nil {
				rep.NotVaried = map[string]string{}
			}
			rep.NotVaried[k] = v
		}
		b, err := o.build(ctx, fmt.Sprintf("build-%d", i), i, plan, ref)
		if err != nil {
			return rep, err
		}
		rep.Builds = append(rep.Builds, b)
	}
	for k, v := range vary.Unavailable {
		if rep.NotVaried == nil {
			rep.NotVaried = map[string]string{}
		}
		rep.NotVaried[k] = v
	}
	rep.Reproduced = true
	for _, b := range rep.Builds {
		rep.Reproduced = rep.Reproduced && b.Reproduced
	}
	if !rep.Reproduced {
		o.diffoscope(ctx, rep, ref)
		if o.Explain && len(o.Vary) > 0 {
			if err := o.explain(ctx, rep, ref); err != nil {
				return rep, err
			}
		}
	}
	if err := o.write(rep); err != nil {
		return rep, err
	}
	if !rep.Reproduced {
		return rep, ErrNotReproduced
	}
	return rep, nil
}

func (o Options) status(format string, a ...any) {
	if o.Status != nil {
		fmt.Fprintf(o.Status, "rebuild: "+format+"\n", a...)
	}
}

// clearOut removes what an earlier rebuild left in out (only its own
// names: out may hold other files).
func clearOut(out string) error {
	ents, err := os.ReadDir(out)
	if err != nil {
		return err
	}
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, "build-") || strings.HasPrefix(n, "explain-") || n == "diffoscope" || n == "report.json" || n == "report.txt" {
			if err := os.RemoveAll(filepath.Join(out, n)); err != nil {
				return err
			}
		}
	}
	return nil
}

// reference builds build-0 with no variation, or takes the given one.
func (o Options) reference(ctx context.Context) (*reference, error) {
	switch {
	case o.Against != nil:
		return &reference{name: o.Against.Path, subjects: o.Against.Subjects, steps: o.Against.Steps, cmp: o.Against}, nil
	case o.Reference != nil:
		res := o.Reference
		return &reference{name: res.OutDir, dir: o.Base.Workspace, subjects: res.Subjects, steps: runner.StepDigestsOfResult(res),
			cmp: &runner.Replay{Path: res.OutDir, Subjects: res.Subjects}}, nil
	}
	o.status("build-0 (the reference, nothing varied)")
	dir := filepath.Join(o.Out, "build-0")
	res, err := o.runOnce(ctx, dir, nil, 0)
	if err != nil {
		return nil, fmt.Errorf("build-0: %w", err)
	}
	if res.Failed != "" {
		return nil, &BuildFailed{Build: "build-0", Step: res.Failed}
	}
	return &reference{name: "build-0", dir: filepath.Join(dir, "artifacts"), subjects: res.Subjects, steps: runner.StepDigestsOfResult(res),
		cmp: &runner.Replay{Path: "build-0", Subjects: res.Subjects}}, nil
}

// BuildFailed is a reference build whose step failed: there is nothing to
// compare with (exit 1, as a failed run).
type BuildFailed struct{ Build, Step string }

func (e *BuildFailed) Error() string {
	return fmt.Sprintf("%s: step %q failed; see its logs in the build's directory", e.Build, e.Step)
}

// build makes one varied build and compares it with the reference.
func (o Options) build(ctx context.Context, name string, n int, plan *vary.Plan, ref *reference) (Build, error) {
	o.status("%s, varied: %s", name, describe(plan))
	dir := filepath.Join(o.Out, name)
	res, err := o.runOnce(ctx, dir, plan, n)
	if err != nil {
		return Build{}, fmt.Errorf("%s: %w", name, err)
	}
	b := Build{Name: name, Dir: dir, Varied: plan.Names, Values: plan.Describe(), Failed: res.Failed, Artifacts: res.Subjects, Replay: res.Replay}
	if b.Varied == nil {
		b.Varied = []string{}
	}
	b.Differences = ref.cmp.Compare(res.Subjects).Differences
	b.Divergence = FirstDivergence(ref.steps, runner.StepDigestsOfResult(res))
	// A build from another workspace than the reference's reproduces
	// nothing, whatever its artifacts: the inputs differ.
	inputsDiffer := b.Divergence != nil && b.Divergence.InputsDiffer
	b.Reproduced = res.Failed == "" && len(b.Differences) == 0 && !inputsDiffer && (res.Replay == nil || res.Replay.Reproduced)
	if b.Reproduced {
		o.status("%s: reproduced", name)
	} else {
		o.status("%s: differs", name)
	}
	return b, nil
}

// runOnce runs the pipeline into dir with its own run lock (so a
// concurrent start reaps nothing of it, and a crash leaves residue the next
// start reaps).
func (o Options) runOnce(ctx context.Context, dir string, plan *vary.Plan, n int) (*runner.Result, error) {
	lock, err := runlock.Acquire(runner.LocksDir(o.Base.StateDir))
	if err != nil {
		return nil, err
	}
	defer lock.Release()
	cfg := o.Base
	cfg.RunID, cfg.OutDir = lock.ID, dir
	cfg.ArtifactsDir = filepath.Join(dir, "artifacts")
	cfg.Vary, cfg.VaryBuild = plan, n
	cfg.Signer = nil // a check attests nothing
	cfg.ExcludeDirs = append(append([]string{}, cfg.ExcludeDirs...), o.Out)
	if cfg.SourceDateEpoch == nil && o.Against != nil && o.Against.SourceDateEpoch != nil {
		cfg.SourceDateEpoch = o.Against.SourceDateEpoch
	}
	if cfg.InvocationID == "" {
		cfg.InvocationID = manifest.NewInvocationID()
	}
	res, err := runner.Run(ctx, cfg)
	if err != nil {
		return res, err
	}
	return res, nil
}

func describe(p *vary.Plan) string {
	if p == nil || len(p.Names) == 0 {
		return "nothing"
	}
	return strings.Join(p.Describe(), ", ")
}

// explain finds which variation makes the build differ: first a build with
// nothing varied (if it differs too, the build changes by itself: time,
// randomness, concurrency), else one build per variation alone.
func (o Options) explain(ctx context.Context, rep *Report, ref *reference) error {
	o.status("explaining: a build with nothing varied")
	b, err := o.build(ctx, "explain-none", 0, &vary.Plan{}, ref)
	if err != nil {
		return err
	}
	rep.Builds = append(rep.Builds, b)
	if !b.Reproduced {
		rep.Causes = append(rep.Causes, Cause{Variation: "none", Build: b.Name, Artifacts: names(b.Differences),
			Reason: "a build with nothing varied differs too: the build does not repeat itself (it embeds the time, random data, or depends on scheduling)"})
		return nil
	}
	for _, v := range o.Vary {
		b, err := o.build(ctx, "explain-"+v, 1, vary.For([]string{v}, 1), ref)
		if err != nil {
			return err
		}
		rep.Builds = append(rep.Builds, b)
		if !b.Reproduced {
			rep.Causes = append(rep.Causes, Cause{Variation: v, Build: b.Name, Artifacts: names(b.Differences),
				Reason: fmt.Sprintf("varying only %s (%s) changes the output", v, strings.Join(b.Values, ", "))})
		}
	}
	return nil
}

func names(ds []runner.ArtifactDifference) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Name)
	}
	return out
}

// diffoscope writes diffoscope's report on each artifact that differs
// between the reference and the first differing build, when both sides
// have it on disk.
func (o Options) diffoscope(ctx context.Context, rep *Report, ref *reference) {
	prog := o.Diffoscope
	if prog == "-" {
		return
	}
	if prog == "" {
		p, err := exec.LookPath("diffoscope")
		if err != nil {
			rep.DiffoscopeNote = "diffoscope is not installed (Debian: apt-get install diffoscope-minimal); only digests were compared"
			return
		}
		prog = p
	}
	if ref.dir == "" {
		rep.DiffoscopeNote = "the reference is a provenance: its artifacts are not on disk to compare byte by byte"
		return
	}
	for _, b := range rep.Builds {
		if b.Reproduced {
			continue
		}
		for _, d := range b.Differences {
			if d.Recorded == "" || d.Replayed == "" {
				continue
			}
			report := filepath.Join(o.Out, "diffoscope", b.Name, d.Name+".txt")
			dr := DiffoscopeReport{Artifact: d.Name, Build: b.Name, Report: report}
			if err := runDiffoscope(ctx, prog, filepath.Join(ref.dir, filepath.FromSlash(d.Name)), filepath.Join(b.Dir, "artifacts", filepath.FromSlash(d.Name)), report); err != nil {
				dr.Error = err.Error()
			}
			rep.Diffoscope = append(rep.Diffoscope, dr)
		}
		return // the first differing build is enough to look at
	}
}

// runDiffoscope runs diffoscope on a and b with its text report written to
// out; exit status 1 means "differences found", which is expected.
func runDiffoscope(ctx context.Context, prog, a, b, out string) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, "--text", out, "--no-progress", a, b)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 1 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("diffoscope: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// write saves report.json and report.txt.
func (o Options) write(rep *Report) error {
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(o.Out, "report.json"), append(data, '\n'), 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(o.Out, "report.txt"))
	if err != nil {
		return err
	}
	WriteText(f, rep)
	return f.Close()
}

// WriteText prints the report for people.
func WriteText(w io.Writer, rep *Report) {
	verdict := "reproduced"
	if !rep.Reproduced {
		verdict = "NOT reproduced"
	}
	fmt.Fprintf(w, "rebuild: %s (compared with %s)\n", verdict, rep.Reference)
	for _, b := range rep.Builds {
		state := "reproduced"
		switch {
		case b.Failed != "":
			state = "failed in step " + b.Failed
		case !b.Reproduced:
			state = "differs"
		}
		fmt.Fprintf(w, "  %s: %s; varied: %s\n", b.Name, state, orNothing(b.Values))
		for _, d := range b.Differences {
			fmt.Fprintf(w, "    differs: %s reference %s this build %s\n", d.Name, digestOrNone(d.Recorded), digestOrNone(d.Replayed))
		}
		if b.Replay != nil && b.Replay.WorkspaceDiffers {
			fmt.Fprintf(w, "    the workspace is not the recorded one: recorded sha256:%s, this build sha256:%s\n", short(b.Replay.RecordedWorkspace), short(b.Replay.ReplayedWorkspace))
		}
		if b.Divergence != nil {
			prefix := "first differing step"
			if b.Reproduced {
				prefix = "artifacts identical, but the workspace differs"
			}
			fmt.Fprintf(w, "    %s: %s\n", prefix, b.Divergence.Reason)
		}
	}
	for _, c := range rep.Causes {
		fmt.Fprintf(w, "cause: %s: %s (%s)\n", c.Variation, c.Reason, strings.Join(c.Artifacts, ", "))
	}
	for _, d := range rep.Diffoscope {
		if d.Error != "" {
			fmt.Fprintf(w, "diffoscope %s (%s): %s\n", d.Artifact, d.Build, d.Error)
		} else {
			fmt.Fprintf(w, "diffoscope %s (%s): %s\n", d.Artifact, d.Build, d.Report)
		}
	}
	if rep.DiffoscopeNote != "" {
		fmt.Fprintf(w, "diffoscope: %s\n", rep.DiffoscopeNote)
	}
	for _, k := range sortedKeys(rep.NotVaried) {
		fmt.Fprintf(w, "not varied: %s: %s\n", k, rep.NotVaried[k])
	}
	fmt.Fprintf(w, "outputs: %s (build-N/ side by side, report.txt, report.json)\n", rep.Out)
}

func orNothing(v []string) string {
	if len(v) == 0 {
		return "nothing"
	}
	return strings.Join(v, ", ")
}

func digestOrNone(d string) string {
	if d == "" {
		return "(none)"
	}
	return "sha256:" + short(d)
}

func sortedKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
