package manifest

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/golden.intoto.json")

func mustMarshal(t *testing.T, in Input) []byte {
	t.Helper()
	st, err := Build(in)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	data, err := Marshal(st)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	return data
}

func TestGolden(t *testing.T) {
	got := mustMarshal(t, sampleInput())
	golden := filepath.Join("testdata", "golden.intoto.json")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("statement differs from %s (run with -update if intended)\ngot:\n%s", golden, got)
	}
}

func TestSameInputSameBytes(t *testing.T) {
	a := mustMarshal(t, sampleInput())
	for range 20 { // protojson varies whitespace and map order: repeat
		if b := mustMarshal(t, sampleInput()); !bytes.Equal(a, b) {
			t.Fatalf("two builds of one input differ:\n%s\n%s", a, b)
		}
	}
}

// Lists without meaningful order must not depend on the order given.
func TestInputOrderDoesNotMatter(t *testing.T) {
	in := sampleInput()
	slices.Reverse(in.Images)
	slices.Reverse(in.Dependencies)
	slices.Reverse(in.Denied)
	slices.Reverse(in.Subjects)
	slices.Reverse(in.Byproducts)
	slices.Reverse(in.Environment)
	for k := range in.Egress {
		slices.Reverse(in.Egress[k])
	}
	if a, b := mustMarshal(t, sampleInput()), mustMarshal(t, in); !bytes.Equal(a, b) {
		t.Fatalf("reordered input changed the statement:\n%s\n%s", a, b)
	}
}

// Only the run metadata may differ between two runs of the same build.
func TestOnlyMetadataDiffers(t *testing.T) {
	in := sampleInput()
	in.InvocationID = "https://ci.example.com/jobs/42"
	in.StartedOn = in.StartedOn.Add(time.Hour)
	in.FinishedOn = in.FinishedOn.Add(2 * time.Hour)
	a, b := decode(t, mustMarshal(t, sampleInput())), decode(t, mustMarshal(t, in))
	md := func(m map[string]any) map[string]any {
		return m["predicate"].(map[string]any)["runDetails"].(map[string]any)["metadata"].(map[string]any)
	}
	ma, mb := md(a), md(b)
	for _, k := range []string{"invocationId", "startedOn", "finishedOn"} {
		if ma[k] == mb[k] {
			t.Errorf("metadata.%s did not change", k)
		}
		delete(ma, k)
		delete(mb, k)
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if !bytes.Equal(ja, jb) {
		t.Errorf("statements differ beyond invocationId/startedOn/finishedOn:\n%s\n%s", ja, jb)
	}
}

func decode(t *testing.T, data []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// get walks a decoded JSON document by keys and list indexes.
func get(t *testing.T, v any, path ...any) any {
	t.Helper()
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("at %v: not an object", p)
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				t.Fatalf("at %v: not a list or too short", p)
			}
			v = l[k]
		}
	}
	return v
}

func TestMapping(t *testing.T) {
	doc := decode(t, mustMarshal(t, sampleInput()))
	pred := get(t, doc, "predicate")
	deps := get(t, pred, "buildDefinition", "resolvedDependencies").([]any)
	var kinds []string
	for _, d := range deps {
		kinds = append(kinds, get(t, d, "annotations", "kind").(string))
	}
	want := []string{"source", "workspace", "pipeline", "image", "image", "fetch", "fetch", "fetch"}
	if !slices.Equal(kinds, want) {
		t.Errorf("dependency kinds = %v, want %v", kinds, want)
	}
	if got := get(t, deps[0], "uri"); got != "git+https://github.com/example/app.git@refs/heads/main" {
		t.Errorf("source uri = %v", got)
	}
	// golang:1.26 ran in build and test: one dependency listing both.
	if got := get(t, deps[4], "annotations", "steps"); !slices.Equal(toStrings(got), []string{"build", "test"}) {
		t.Errorf("image steps = %v", got)
	}
	if got := get(t, pred, "buildDefinition", "internalParameters", "egressDenied", 1, "count"); got != 3.0 {
		t.Errorf("merged denied count = %v, want 3", got)
	}
	if got := toStrings(get(t, pred, "buildDefinition", "internalParameters", "environment")); !slices.Equal(got, []string{"CGO_ENABLED", "GOFLAGS"}) {
		t.Errorf("environment = %v", got)
	}
	if got := toStrings(get(t, pred, "buildDefinition", "externalParameters", "steps")); !slices.Equal(got, []string{"deps", "build", "test"}) {
		t.Errorf("steps lost their order: %v", got)
	}
	if got := get(t, pred, "runDetails", "builder", "id"); got != "https://ci.example.com/cleanroom@v1" {
		t.Errorf("builder id = %v", got)
	}
	subj := get(t, doc, "subject").([]any)
	if len(subj) != 2 || get(t, subj[0], "name") != "dist/app" {
		t.Errorf("subjects = %v", subj)
	}
}

func toStrings(v any) []string {
	var out []string
	for _, e := range v.([]any) {
		out = append(out, e.(string))
	}
	return out
}

func TestDefaultBuilderID(t *testing.T) {
	in := sampleInput()
	in.BuilderID = ""
	doc := decode(t, mustMarshal(t, in))
	if got := get(t, doc, "predicate", "runDetails", "builder", "id"); got != DefaultBuilderID {
		t.Errorf("builder id = %v, want %v", got, DefaultBuilderID)
	}
}

// No credential from a remote or a pre-signed URL reaches the statement.
func TestCredentialsRedacted(t *testing.T) {
	data := string(mustMarshal(t, sampleInput()))
	for _, secret := range []string{"s3cr3t", "ci-token", "deadbeef"} {
		if strings.Contains(data, secret) {
			t.Errorf("statement contains %q", secret)
		}
	}
	if !strings.Contains(data, "X-Amz-Signature=REDACTED&v=2") {
		t.Errorf("query not redacted in place")
	}
}

func TestEnvironmentValuesRefused(t *testing.T) {
	in := sampleInput()
	in.Environment = append(in.Environment, "API_TOKEN=hunter2")
	_, err := Build(in)
	if err == nil || !strings.Contains(err.Error(), "never values") {
		t.Fatalf("Build accepted an environment value: %v", err)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error message repeats the value: %v", err)
	}
}

func TestFlagValuesWithEqualsRefused(t *testing.T) {
	in := sampleInput()
	in.Flags["env"] = []string{"TOKEN=x"}
	if _, err := Build(in); err == nil {
		t.Fatal("Build accepted a KEY=VALUE flag")
	}
}

func TestFailedRun(t *testing.T) {
	in := sampleInput()
	in.FailedStep = "test"
	if _, err := Build(in); err == nil || !strings.Contains(err.Error(), "failed run attests no artifacts") {
		t.Fatalf("failed run with subjects: err = %v", err)
	}
	in.Subjects = nil
	doc := decode(t, mustMarshal(t, in))
	if s, ok := doc["subject"]; ok {
		t.Errorf("failed run has subjects: %v", s)
	}
	if got := get(t, doc, "predicate", "buildDefinition", "internalParameters", "failedStep"); got != "test" {
		t.Errorf("failedStep = %v", got)
	}
}

func TestValidation(t *testing.T) {
	cases := map[string]func(*Input){
		"builder not a URI":    func(in *Input) { in.BuilderID = "local" },
		"no invocation":        func(in *Input) { in.InvocationID = "" },
		"no start":             func(in *Input) { in.StartedOn = time.Time{} },
		"finished before":      func(in *Input) { in.FinishedOn = in.StartedOn.Add(-time.Second) },
		"no runner version":    func(in *Input) { in.RunnerVersion = "" },
		"pipeline digest case": func(in *Input) { in.Pipeline.SHA256 = strings.ToUpper(in.Pipeline.SHA256) },
		"pipeline digest len":  func(in *Input) { in.Pipeline.SHA256 = "abc" },
		"no steps":             func(in *Input) { in.Steps = nil },
		"duplicate step":       func(in *Input) { in.Steps = []string{"a", "a"} },
		"bad flag name":        func(in *Input) { in.Flags["--allow"] = []string{"x"} },
		"no commit nor tree":   func(in *Input) { in.Source = Source{} },
		"short commit":         func(in *Input) { in.Source.Commit = "abc" },
		"remote without commit": func(in *Input) {
			in.Source.Commit = ""
		},
		"relative remote":     func(in *Input) { in.Source.Remote = "../repo" },
		"image digest":        func(in *Input) { in.Images[0].Digest = "sha256:xyz" },
		"dependency url":      func(in *Input) { in.Dependencies[0].URL = "not a url" },
		"dependency bad port": func(in *Input) { in.Dependencies[2].URL = "host:99999" },
		"dependency digest":   func(in *Input) { in.Dependencies[0].SHA256 = "ABC" },
		"negative size":       func(in *Input) { in.Dependencies[0].Size = -1 },
		"denied count":        func(in *Input) { in.Denied[0].Count = 0 },
		"denied port":         func(in *Input) { in.Denied[0].Port = 70000 },
		"subject digest":      func(in *Input) { in.Subjects[0].SHA256 = "" },
		"duplicate subject":   func(in *Input) { in.Subjects[1].Name = in.Subjects[0].Name },
		"duplicate byproduct": func(in *Input) { in.Byproducts[1].Name = in.Byproducts[0].Name },
		"environment newline": func(in *Input) { in.Environment = []string{"A\nB"} },
		"environment empty":   func(in *Input) { in.Environment = []string{""} },
		"sandbox inexact int": func(in *Input) { in.Sandbox["big"] = uint64(1<<63 + 1) },
		"sandbox not JSON":    func(in *Input) { in.Sandbox["f"] = func() {} },
		"control in step":     func(in *Input) { in.Steps[0] = "a\x1bb" },
		"egress empty entry":  func(in *Input) { in.Egress["deps"] = []string{""} },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			in := sampleInput()
			mutate(&in)
			if _, err := Build(in); err == nil {
				t.Errorf("Build accepted invalid input")
			}
		})
	}
}

// All problems are reported at once, not one per attempt.
func TestValidationListsAllProblems(t *testing.T) {
	in := sampleInput()
	in.InvocationID = ""
	in.RunnerVersion = ""
	_, err := Build(in)
	if err == nil || !strings.Contains(err.Error(), "InvocationID") || !strings.Contains(err.Error(), "RunnerVersion") {
		t.Fatalf("err = %v", err)
	}
}

func TestRemoteForms(t *testing.T) {
	cases := map[string]string{
		"https://github.com/o/r":                  "https://github.com/o/r",
		"git+https://github.com/o/r":              "https://github.com/o/r",
		"https://x-access-token:t@github.com/o/r": "https://github.com/o/r",
		"https://tokenonly@github.com/o/r":        "https://github.com/o/r",
		"git@github.com:o/r.git":                  "ssh://git@github.com/o/r.git",
		"ssh://git:pw@github.com/o/r":             "ssh://git@github.com/o/r",
		"/srv/git/r":                              "file:///srv/git/r",
	}
	for in, want := range cases {
		got, err := gitRemoteURI(in)
		if err != nil || got != want {
			t.Errorf("gitRemoteURI(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestSandboxNumbersExact(t *testing.T) {
	in := sampleInput()
	in.Sandbox = map[string]any{"max": int64(1 << 53), "ratio": 0.25}
	doc := decode(t, mustMarshal(t, in))
	sb := get(t, doc, "predicate", "buildDefinition", "internalParameters", "sandbox")
	if get(t, sb, "max") != float64(1<<53) || get(t, sb, "ratio") != 0.25 {
		t.Errorf("sandbox = %v", sb)
	}
}

func TestNewInvocationID(t *testing.T) {
	a, b := NewInvocationID(), NewInvocationID()
	if a == b || len(a) != 36 {
		t.Errorf("NewInvocationID = %q, %q", a, b)
	}
}
