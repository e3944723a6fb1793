package rebuild

import (
	"fmt"

	"github.com/cleanroom-ci/cleanroom/runner"
)

// Divergence is where two builds of one pipeline part ways.
type Divergence struct {
	// Step is the first step whose workspace after it differs ("" when
	// none does); Index its position.
	Step  string `json:"step,omitempty"`
	Index int    `json:"index"`
	// InputsDiffer: the workspaces differed before the first step already
	// (another source), so no step is to blame.
	InputsDiffer bool `json:"inputsDiffer,omitempty"`
	// LogDiffers: the step's log differs too (only provenances record it).
	LogDiffers bool `json:"logDiffers,omitempty"`
	// Reason says it in words.
	Reason string `json:"reason"`
}

// FirstDivergence compares two builds' per-step workspace digests in step
// order; nil means every step left the same workspace.
func FirstDivergence(a, b []runner.StepDigests) *Divergence {
	if len(a) > 0 && len(b) > 0 && a[0].Before != "" && b[0].Before != "" && a[0].Before != b[0].Before {
		return &Divergence{InputsDiffer: true, Step: a[0].Name, Reason: fmt.Sprintf(
			"the workspaces differ before the first step (sha256:%s vs sha256:%s): the builds started from different sources", short(a[0].Before), short(b[0].Before))}
	}
	for i := 0; i < min(len(a), len(b)); i++ {
		sa, sb := a[i], b[i]
		if sa.Name != sb.Name {
			return &Divergence{Step: sa.Name, Index: i, Reason: fmt.Sprintf("the pipelines differ: step %d is %q in one and %q in the other", i+1, sa.Name, sb.Name)}
		}
		if sa.After == "" || sb.After == "" {
			if sa.After != sb.After {
				return &Divergence{Step: sa.Name, Index: i, Reason: fmt.Sprintf("step %q ran in one build only, or one provenance records no per-step digests", sa.Name)}
			}
			continue
		}
		if sa.After != sb.After {
			d := &Divergence{Step: sa.Name, Index: i, LogDiffers: sa.Log != "" && sb.Log != "" && sa.Log != sb.Log}
			d.Reason = fmt.Sprintf("step %q is the first to leave a different workspace (sha256:%s vs sha256:%s)", sa.Name, short(sa.After), short(sb.After))
			if d.LogDiffers {
				d.Reason += "; its logs differ too"
			}
			return d
		}
	}
	if len(a) != len(b) {
		return &Divergence{Index: min(len(a), len(b)), Reason: fmt.Sprintf("one build ran %d steps, the other %d", len(a), len(b))}
	}
	return nil
}

func short(d string) string {
	if len(d) > 12 {
		return d[:12]
	}
	return d
}

// ProvenanceDiff compares two provenances of cleanroom runs without
// rebuilding: inputs (pipeline, source, images, fetched materials),
// SOURCE_DATE_EPOCH, the steps' workspaces and the artifacts.
type ProvenanceDiff struct {
	A, B string `json:"-"`
	// Inputs lists the inputs that differ, in words.
	Inputs     []string                    `json:"inputs,omitempty"`
	Divergence *Divergence                 `json:"firstDivergingStep,omitempty"`
	Artifacts  []runner.ArtifactDifference `json:"artifacts,omitempty"`
	// Same is true when nothing differs: same artifacts, same workspaces.
	Same bool `json:"same"`
}

// DiffProvenances loads and compares two provenance files.
func DiffProvenances(pathA, pathB string) (*ProvenanceDiff, error) {
	a, err := runner.LoadReplay(pathA)
	if err != nil {
		return nil, err
	}
	b, err := runner.LoadReplay(pathB)
	if err != nil {
		return nil, err
	}
	d := &ProvenanceDiff{A: pathA, B: pathB}
	if a.PipelineSHA256 != b.PipelineSHA256 {
		d.Inputs = append(d.Inputs, fmt.Sprintf("pipeline file: sha256:%s vs sha256:%s", short(a.PipelineSHA256), short(b.PipelineSHA256)))
	}
	if a.WorkspaceSHA256 != b.WorkspaceSHA256 {
		d.Inputs = append(d.Inputs, fmt.Sprintf("workspace before the first step: sha256:%s vs sha256:%s", short(a.WorkspaceSHA256), short(b.WorkspaceSHA256)))
	}
	if sa, sb := epochString(a.SourceDateEpoch), epochString(b.SourceDateEpoch); sa != sb {
		d.Inputs = append(d.Inputs, fmt.Sprintf("SOURCE_DATE_EPOCH: %s vs %s", sa, sb))
	}
	for ref, da := range a.Images {
		if db, ok := b.Images[ref]; ok && db != da {
			d.Inputs = append(d.Inputs, fmt.Sprintf("image %s: %s vs %s", ref, da, db))
		}
	}
	d.Inputs = append(d.Inputs, materialDiffs(a, b)...)
	d.Divergence = FirstDivergence(a.Steps, b.Steps)
	d.Artifacts = a.Compare(b.Subjects).Differences
	d.Same = len(d.Inputs) == 0 && d.Divergence == nil && len(d.Artifacts) == 0
	return d, nil
}

func epochString(e *int64) string {
	if e == nil {
		return "not set"
	}
	return fmt.Sprint(*e)
}

// materialDiffs names the fetched bodies that differ: a URL fetched by
// both with different digests, or by one only.
func materialDiffs(a, b *runner.Replay) []string {
	key := func(m runner.Material) string {
		if m.Module != "" {
			return m.Module + "@" + m.Version + " " + m.URL[max(0, len(m.URL)-4):]
		}
		return m.URL
	}
	am, bm := map[string]runner.Material{}, map[string]runner.Material{}
	for _, m := range a.Materials {
		am[key(m)] = m
	}
	for _, m := range b.Materials {
		bm[key(m)] = m
	}
	var out []string
	for _, m := range a.Materials {
		o, ok := bm[key(m)]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("fetched only by the first (step %s): %s", m.Step, m.URL))
		case o.SHA256 != m.SHA256:
			out = append(out, fmt.Sprintf("fetched with another body (step %s): %s sha256:%s vs sha256:%s", m.Step, m.URL, short(m.SHA256), short(o.SHA256)))
		}
	}
	for _, m := range b.Materials {
		if _, ok := am[key(m)]; !ok {
			out = append(out, fmt.Sprintf("fetched only by the second (step %s): %s", m.Step, m.URL))
		}
	}
	return out
}
