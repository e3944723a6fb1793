package rebuild

import (
	"strings"
	"testing"

	"github.com/cleanroom-ci/cleanroom/runner"
)

func TestFirstDivergence(t *testing.T) {
	steps := func(afters ...string) []runner.StepDigests {
		var out []runner.StepDigests
		before := "src"
		for i, a := range afters {
			out = append(out, runner.StepDigests{Name: []string{"fetch", "build", "test"}[i], Before: before, After: a})
			before = a
		}
		return out
	}
	if d := FirstDivergence(steps("a", "b", "c"), steps("a", "b", "c")); d != nil {
		t.Fatalf("identical builds diverge: %+v", d)
	}
	d := FirstDivergence(steps("a", "b", "c"), steps("a", "x", "y"))
	if d == nil || d.Step != "build" || d.Index != 1 || d.InputsDiffer {
		t.Fatalf("want build: %+v", d)
	}
	other := steps("a", "b", "c")
	other[0].Before = "other-src"
	if d := FirstDivergence(steps("a", "b", "c"), other); d == nil || !d.InputsDiffer || !strings.Contains(d.Reason, "different sources") {
		t.Fatalf("want inputs differ: %+v", d)
	}
	if d := FirstDivergence(steps("a", "b"), steps("a", "b", "c")); d == nil || d.Index != 2 {
		t.Fatalf("want a step count difference: %+v", d)
	}
	logs := steps("a", "b")
	logs[1].Log = "l1"
	logs2 := steps("a", "x")
	logs2[1].Log = "l2"
	if d := FirstDivergence(logs, logs2); d == nil || !d.LogDiffers {
		t.Fatalf("want the log difference noted: %+v", d)
	}
}
