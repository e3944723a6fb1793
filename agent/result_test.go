package agent

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/cleanroom-ci/cleanroom/agent/jobs"
	"github.com/cleanroom-ci/cleanroom/runner"
	"github.com/cleanroom-ci/cleanroom/runner/manifest"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
)

// The agent decodes the child's `--output json` with its own small type;
// this test encodes the engine's Result and checks that every field the
// agent shows survives, so a renamed JSON field in runner fails here and
// not silently on an agent's page.
func TestChildResultDecodesRunnerResult(t *testing.T) {
	res := runner.Result{
		RunID:  "abc",
		Failed: "test",
		Steps: []runner.StepResult{
			{Name: "build", Status: "ok", DurationS: 1.5, Denials: []egress.Denial{{Target: "a:443", Count: 2}, {Target: "b:443", Count: 3}}},
			{Name: "test", Status: "failed", ExitCode: 7, DurationS: 0.25},
		},
		Subjects:   []manifest.Subject{{Name: "out/app", SHA256: "aa"}},
		Provenance: "/out/provenance.json",
		Bundles:    []string{"/out/provenance.sigstore.json", "/out/sub/app.sigstore.json"},
		SignedBy:   "key sha256:01",
		OutDir:     "/out",
	}
	data, err := json.Marshal(&res)
	if err != nil {
		t.Fatal(err)
	}
	var got childResult
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	want := &jobs.Result{
		FailedStep: "test", SignedBy: "key sha256:01", Denials: 5,
		Steps: []jobs.Step{
			{Name: "build", Status: "ok", Seconds: 1.5, Denied: 5},
			{Name: "test", Status: "failed", ExitCode: 7, Seconds: 0.25},
		},
		Artifacts:  []jobs.Artifact{{Name: "out/app", SHA256: "aa"}},
		Provenance: "provenance.json",
		Bundles:    []string{"provenance.sigstore.json", "sub/app.sigstore.json"},
	}
	if s := summarize(&got, "/out"); !reflect.DeepEqual(s, want) {
		t.Fatalf("summary of the decoded result:\n got  %+v\n want %+v", s, want)
	}
}
