package runner

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/cleanroom-ci/cleanroom/runner/manifest"
	"github.com/cleanroom-ci/cleanroom/runner/vary"
	"github.com/cleanroom-ci/cleanroom/sandbox"
	provenance "github.com/in-toto/attestation/go/predicates/provenance/v1"
)

// What the engine does for reproducible builds: SOURCE_DATE_EPOCH for every
// step, the variations of a rebuild applied to a step, and what the
// provenance records of both. The driver that builds again and compares is
// runner/rebuild.

// epoch is the SOURCE_DATE_EPOCH of a run and where it came from.
type epoch struct {
	Value int64  `json:"value"`
	From  string `json:"from"` // "git commit", "flag", "replay"; + " (varied)"
}

// Where SOURCE_DATE_EPOCH comes from.
const (
	EpochFromGit    = "git commit"
	EpochFromFlag   = "flag"
	EpochFromReplay = "replay"
)

// sourceDateEpoch is the run's SOURCE_DATE_EPOCH: the configured value (a
// flag, or the replayed provenance's), else the commit time of HEAD; nil
// when there is neither (not a git work tree). A rebuild's variation moves it.
func sourceDateEpoch(cfg Config) *epoch {
	var e *epoch
	switch {
	case cfg.SourceDateEpoch != nil:
		from := EpochFromFlag
		if cfg.Replay != nil && cfg.Replay.SourceDateEpoch != nil && *cfg.Replay.SourceDateEpoch == *cfg.SourceDateEpoch {
			from = EpochFromReplay
		}
		e = &epoch{Value: *cfg.SourceDateEpoch, From: from}
	case cfg.Replay != nil && cfg.Replay.SourceDateEpoch != nil:
		e = &epoch{Value: *cfg.Replay.SourceDateEpoch, From: EpochFromReplay}
	default:
		if t, ok := gitCommitTime(cfg.Workspace); ok {
			e = &epoch{Value: t, From: EpochFromGit}
		}
	}
	if cfg.Vary.Has(vary.SourceDateEpoch) {
		if e == nil {
			e = &epoch{From: "none"}
		}
		e = &epoch{Value: e.Value + cfg.Vary.SourceDateEpochOffset, From: e.From + " (varied)"}
	}
	return e
}

// gitCommitTime is the committer time of HEAD of the work tree at dir.
func gitCommitTime(dir string) (int64, bool) {
	cmd := exec.Command("git", "-c", "core.fsmonitor=false", "-c", "safe.directory=*", "-C", dir, "log", "-1", "--format=%ct", "HEAD")
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1")
	out, err := cmd.Output()
	if err != nil {
		return 0, false
	}
	t, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	return t, err == nil
}

// reproEnv adds SOURCE_DATE_EPOCH and the variations' TZ and locale to a
// step's environment. What the pipeline sets wins: a pipeline that pins
// TZ made it an input.
func reproEnv(cfg Config, env []string) []string {
	set := map[string]bool{}
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		set[k] = true
	}
	add := func(k, v string) {
		if !set[k] {
			env = append(env, k+"="+v)
		}
	}
	if cfg.sde != nil {
		add("SOURCE_DATE_EPOCH", strconv.FormatInt(cfg.sde.Value, 10))
	}
	if p := cfg.Vary; p != nil {
		if p.TZ != "" {
			add("TZ", p.TZ)
		}
		if p.Locale != "" {
			add("LANG", p.Locale)
			add("LC_ALL", p.Locale)
		}
	}
	return env
}

// stepVariation is what the sandbox varies for a step.
func stepVariation(cfg Config) sandbox.Variation {
	p := cfg.Vary
	if p == nil {
		return sandbox.Variation{}
	}
	return sandbox.Variation{Hostname: p.Hostname, UID: p.UID, GID: p.GID, Umask: p.Umask, CPUSet: p.CPUSet, ReverseEnv: p.EnvOrder}
}

// stepWorkdir is where the workspace is mounted in the steps.
func stepWorkdir(cfg Config) string {
	if cfg.Vary != nil && cfg.Vary.WorkspaceDir != "" {
		return cfg.Vary.WorkspaceDir
	}
	return Workdir
}

// recordedFlags adds the flags a replay or rebuild reuses to the
// provenance's externalParameters.flags: the module proxy (credentials
// removed), inspection and the rules that require it.
func recordedFlags(cfg Config, flags map[string][]string) {
	if cfg.GoModUpstream != nil {
		flags["goproxy-upstream"] = []string{manifest.RedactURL(cfg.GoModUpstream.String())}
	}
	if cfg.Inspect {
		flags["inspect"] = []string{"true"}
	}
	if len(cfg.RequireInspection) > 0 {
		flags["require-inspection"] = cfg.RequireInspection
	}
}

// rebuildInternal records SOURCE_DATE_EPOCH and the variations in
// internalParameters.
func rebuildInternal(cfg Config, res *Result, internal map[string]any) {
	if res.SourceDateEpoch != nil {
		internal["sourceDateEpoch"] = map[string]any{"value": float64(res.SourceDateEpoch.Value), "from": res.SourceDateEpoch.From}
	}
	if p := cfg.Vary; p != nil {
		names := make([]any, len(p.Names))
		for i, n := range p.Names {
			names[i] = n
		}
		desc := make([]any, 0, len(p.Names))
		for _, d := range p.Describe() {
			desc = append(desc, d)
		}
		internal["variations"] = map[string]any{"varied": names, "values": desc}
	}
}

// Byproduct names of the per-step workspace digests.
const (
	StepBeforeSuffix = "/workspace.before"
	StepAfterSuffix  = "/workspace.after"
	StepPrefix       = "steps/"
)

// stepByproducts are the workspace tree digests before and after each step
// that ran, as byproducts "steps/<name>/workspace.before|after": two
// provenances can be compared step by step (cleanroom diff).
func stepByproducts(res *Result) []manifest.Byproduct {
	var out []manifest.Byproduct
	for _, s := range res.Steps {
		if s.WorkspaceBefore != "" {
			out = append(out, manifest.Byproduct{Name: StepPrefix + s.Name + StepBeforeSuffix, SHA256: s.WorkspaceBefore})
		}
		if s.WorkspaceAfter != "" {
			out = append(out, manifest.Byproduct{Name: StepPrefix + s.Name + StepAfterSuffix, SHA256: s.WorkspaceAfter})
		}
	}
	return out
}

// StepDigests is one step's workspace tree digests, as a provenance records
// them.
type StepDigests struct {
	Name   string `json:"name"`
	Before string `json:"before,omitempty"`
	After  string `json:"after,omitempty"`
	// Log is the sha256 of the step's log byproduct.
	Log string `json:"log,omitempty"`
}

// StepDigestsOf reads the per-step digests of a provenance, in the order of
// externalParameters.steps.
func StepDigestsOf(prov *provenance.Provenance) []StepDigests {
	byName := map[string]*StepDigests{}
	var out []*StepDigests
	for _, v := range prov.GetBuildDefinition().GetExternalParameters().GetFields()["steps"].GetListValue().GetValues() {
		d := &StepDigests{Name: v.GetStringValue()}
		byName[d.Name] = d
		out = append(out, d)
	}
	for _, b := range prov.GetRunDetails().GetByproducts() {
		name, sum := b.GetName(), b.GetDigest()["sha256"]
		if rest, ok := strings.CutPrefix(name, StepPrefix); ok {
			if step, ok := strings.CutSuffix(rest, StepBeforeSuffix); ok && byName[step] != nil {
				byName[step].Before = sum
			} else if step, ok := strings.CutSuffix(rest, StepAfterSuffix); ok && byName[step] != nil {
				byName[step].After = sum
			}
		} else if rest, ok := strings.CutPrefix(name, "logs/"); ok {
			if step, ok := strings.CutSuffix(rest, ".log"); ok && byName[step] != nil {
				byName[step].Log = sum
			}
		}
	}
	res := make([]StepDigests, len(out))
	for i, d := range out {
		res[i] = *d
	}
	return res
}

// StepDigestsOfResult is StepDigestsOf for a run's result.
func StepDigestsOfResult(res *Result) []StepDigests {
	var out []StepDigests
	for _, s := range res.Steps {
		out = append(out, StepDigests{Name: s.Name, Before: s.WorkspaceBefore, After: s.WorkspaceAfter})
	}
	return out
}

// replayPreflight lists, before any image is resolved or step started,
// every recorded material a replay cannot serve: bodies missing from the
// store, and tunnels recorded without content. All of them are named at
// once, so one import-materials fixes the run.
func replayPreflight(cfg Config) error {
	r := cfg.Replay
	if r == nil {
		return nil
	}
	var missing []string
	seen := map[string]bool{}
	for _, m := range r.Materials {
		if seen[m.SHA256] {
			continue
		}
		seen[m.SHA256] = true
		if cfg.Store == nil || !cfg.Store.Has(m.SHA256) {
			missing = append(missing, fmt.Sprintf("%s (sha256:%s, step %s)", m.URL, m.SHA256, m.Step))
		}
	}
	for _, t := range r.Tunnels {
		missing = append(missing, t+" (an opaque tunnel: recorded without inspection, no content to serve)")
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("the replay of %s cannot start: %d recorded materials are not available (run import-materials with the recorded run's export):\n  %s",
		r.Path, len(missing), strings.Join(missing, "\n  "))
}

// replayImages warns about images whose digest is not the recorded one:
// the inputs differ, and the comparison says so (ReplayResult.Images).
func replayImages(cfg Config, res *Result) []ImageDifference {
	r := cfg.Replay
	if r == nil || len(r.Images) == 0 {
		return nil
	}
	var out []ImageDifference
	for _, im := range res.Images {
		if want, ok := r.Images[im.Ref]; ok && want != im.Digest {
			out = append(out, ImageDifference{Ref: im.Ref, Recorded: want, Used: im.Digest})
			cfg.Logger.Warn("the image is not the recorded one", "ref", im.Ref, "recorded", want, "now", im.Digest)
		}
	}
	return out
}

// ImageDifference is an image that resolved to another digest than the
// recorded run's.
type ImageDifference struct {
	Ref      string `json:"ref"`
	Recorded string `json:"recorded"`
	Used     string `json:"used"`
}
