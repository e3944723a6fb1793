package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cleanroom-ci/cleanroom/runner"
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
