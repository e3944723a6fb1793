package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cleanroom-ci/cleanroom/runner"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
)

func TestRunOutcomeJSON(t *testing.T) {
	for _, tc := range []struct {
		name string
		res  *runner.Result
		err  error
		want string
	}{
		{"ok", &runner.Result{RunID: "r1", OutDir: "/o"}, nil,
			`{"status":"ok","exitCode":0,"runId":"r1","steps":null,"images":null,"outDir":"/o","startedOn":"0001-01-01T00:00:00Z","finishedOn":"0001-01-01T00:00:00Z"}`},
		{"config error", nil, systemFailure(errors.New("cleanroom.yaml:3:5: steps[0].run: required")),
			`{"status":"error","exitCode":2,"error":"cleanroom.yaml:3:5: steps[0].run: required"}`},
		{"step failed", &runner.Result{RunID: "r1", Failed: "build", OutDir: "/o"}, buildFailure(nil),
			`{"status":"failed","exitCode":1,"error":"step build failed","runId":"r1","steps":null,"images":null,"failedStep":"build","outDir":"/o","startedOn":"0001-01-01T00:00:00Z","finishedOn":"0001-01-01T00:00:00Z"}`},
		{"artifacts", &runner.Result{RunID: "r1", Failed: runner.ArtifactsStep, Error: `artifact glob "out/x" matches nothing`, OutDir: "/o"}, buildFailure(nil),
			`{"status":"failed","exitCode":1,"error":"artifact glob \"out/x\" matches nothing","runId":"r1","steps":null,"images":null,"failedStep":"(artifacts)","outDir":"/o","startedOn":"0001-01-01T00:00:00Z","finishedOn":"0001-01-01T00:00:00Z"}`},
		{"replay mismatch", &runner.Result{RunID: "r1", OutDir: "/o"}, buildFailure(errors.New("the replay did not reproduce the artifacts of p.json")),
			`{"status":"failed","exitCode":1,"error":"the replay did not reproduce the artifacts of p.json","runId":"r1","steps":null,"images":null,"outDir":"/o","startedOn":"0001-01-01T00:00:00Z","finishedOn":"0001-01-01T00:00:00Z"}`},
		{"cancelled", nil, systemFailure(errRunCancelled),
			`{"status":"cancelled","exitCode":2,"error":"run cancelled; every sandbox it started has been removed"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(runOutcome(tc.res, tc.err))
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Errorf("got  %s\nwant %s", b, tc.want)
			}
		})
	}
}

// A configuration error still prints the JSON object on stdout.
func TestRunJSONOnConfigError(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "cleanroom.yaml")
	os.WriteFile(p, []byte("version: 1\nimage: busybox\nsteps:\n  - name: a\n"), 0o644)
	code, out, errs := cli(t, "run", "-f", p, "--output", "json")
	var got runJSON
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, out)
	}
	if code != 2 || got.Status != "error" || got.ExitCode != 2 || got.Error == "" || got.Result != nil {
		t.Fatalf("exit %d, %+v\nstderr %s", code, got, errs)
	}
	if errs != "cleanroom: "+got.Error+"\n" {
		t.Errorf("stderr %q, want the same error as the JSON", errs)
	}
}

func TestCheckRuleURL(t *testing.T) {
	for rule, want := range map[string]string{
		"https://deps.example.org/x":  `egress rule "https://deps.example.org/x" is a URL: write the host, not a URL ("deps.example.org")`,
		"http://10.0.0.5:8080/simple": `egress rule "http://10.0.0.5:8080/simple" is a URL: write the host, not a URL ("10.0.0.5:8080")`,
	} {
		if err := checkRule(rule); err == nil || err.Error() != want {
			t.Errorf("checkRule(%q) = %v, want %s", rule, err, want)
		}
	}
	if err := checkRule("deps.example.org"); err != nil {
		t.Errorf("a host rule: %v", err)
	}
	// Through the pipeline file, the message is placed at the rule.
	dir := t.TempDir()
	p := filepath.Join(dir, "cleanroom.yaml")
	os.WriteFile(p, []byte("version: 1\nimage: busybox@sha256:"+strings.Repeat("a", 64)+"\negress:\n  allow: [\"https://deps.example.org/x\"]\nsteps:\n  - name: a\n    run: \"true\"\n"), 0o644)
	code, _, errs := cli(t, "lint", "-f", p)
	want := "cleanroom: " + p + `:4:11: egress.allow[0]: egress rule "https://deps.example.org/x" is a URL: write the host, not a URL ("deps.example.org")` + "\n"
	if code != 2 || errs != want {
		t.Errorf("exit %d, stderr\n%q\nwant\n%q", code, errs, want)
	}
}

func TestReportAuditAllowlistAndCosmetics(t *testing.T) {
	res := &runner.Result{OutDir: "/o", Steps: []runner.StepResult{
		{Name: "deps", Status: "ok", DurationS: 0.042, Mode: "audit", WouldNeed: []string{"proxy.example.org:443", "deps.example.org"},
			Denials: []egress.Denial{
				{Target: "cache.test:8080", Hint: "10.0.0.5:8080", Reason: "cache.test resolved to 10.0.0.5, a private address; names never reach special addresses", Count: 2},
				{Target: "", Reason: "malformed request", Count: 1},
			}},
		{Name: "build", Status: "ok", DurationS: 12.34, Mode: "audit", WouldNeed: []string{"deps.example.org"}},
		{Name: "test", Status: "ok", DurationS: 0.1, Mode: "enforce", Denials: []egress.Denial{{Target: "other.example.org:443", Hint: "other.example.org:443", Reason: "no rule matches", Count: 1}}},
	}}
	var b strings.Builder
	report(&b, res)
	want := `STEP   STATUS  EXIT  DURATION  DENIED
deps   ok      0     42ms      3
build  ok      0     12.3s     0
test   ok      0     0.1s      1
denied egress in step deps: cache.test:8080 ×2: cache.test resolved to 10.0.0.5, a private address; names never reach special addresses (allow with "10.0.0.5:8080")
denied egress in step deps: (no destination: malformed request) ×1: malformed request
denied egress in step test: other.example.org:443 ×1: no rule matches (allow with "other.example.org:443")
audit: the egress.allow this run needs under enforce (paste into cleanroom.yaml):
egress:
  allow:
    - "deps.example.org"  # steps: deps, build
    - "proxy.example.org:443"  # steps: deps
    - "10.0.0.5:8080"  # special address, denied even in audit mode: only this explicit IP rule allows it; steps: deps
outputs: /o
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestFormatDuration(t *testing.T) {
	for s, want := range map[float64]string{0: "0ms", 0.0004: "0ms", 0.0123: "12ms", 0.0999: "100ms", 0.1: "0.1s", 1.26: "1.3s"} {
		if got := formatDuration(s); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", s, got, want)
		}
	}
}
