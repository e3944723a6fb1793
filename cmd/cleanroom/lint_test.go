package main

import (
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type sarifLog struct {
	Version string `json:"version"`
	Schema  string `json:"$schema"`
	Runs    []struct {
		Tool struct {
			Driver struct {
				Name    string `json:"name"`
				Version string `json:"version"`
				Rules   []struct {
					ID      string `json:"id"`
					HelpURI string `json:"helpUri"`
				} `json:"rules"`
			} `json:"driver"`
		} `json:"tool"`
		Invocations []struct {
			ExecutionSuccessful *bool `json:"executionSuccessful"`
			ExitCode            int   `json:"exitCode"`
		} `json:"invocations"`
		Results []struct {
			RuleID    string `json:"ruleId"`
			RuleIndex int    `json:"ruleIndex"`
			Level     string `json:"level"`
			Message   struct {
				Text string `json:"text"`
			} `json:"message"`
			Locations []struct {
				PhysicalLocation struct {
					ArtifactLocation struct {
						URI string `json:"uri"`
					} `json:"artifactLocation"`
					Region struct {
						StartLine   int `json:"startLine"`
						StartColumn int `json:"startColumn"`
					} `json:"region"`
				} `json:"physicalLocation"`
			} `json:"locations"`
		} `json:"results"`
	} `json:"runs"`
}

// parseSARIF checks what SARIF 2.1.0 requires of the parts cleanroom
// writes (the output also passes the SARIF multitool's validate).
func parseSARIF(t *testing.T, out string) sarifLog {
	t.Helper()
	var l sarifLog
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if l.Version != "2.1.0" || len(l.Runs) != 1 {
		t.Fatalf("version %q, %d runs", l.Version, len(l.Runs))
	}
	r := l.Runs[0]
	if r.Tool.Driver.Name != "cleanroom" || r.Tool.Driver.Version == "" || !strings.ContainsAny(r.Tool.Driver.Version[:1], "0123456789") {
		t.Errorf("driver %+v", r.Tool.Driver)
	}
	for _, rule := range r.Tool.Driver.Rules {
		if u, err := url.Parse(rule.HelpURI); err != nil || !u.IsAbs() {
			t.Errorf("rule %s: helpUri %q is not absolute", rule.ID, rule.HelpURI)
		}
	}
	if len(r.Invocations) != 1 || r.Invocations[0].ExecutionSuccessful == nil {
		t.Errorf("invocations %+v: one with executionSuccessful is required", r.Invocations)
	}
	for _, res := range r.Results {
		if res.Message.Text == "" || res.RuleIndex >= len(r.Tool.Driver.Rules) || r.Tool.Driver.Rules[res.RuleIndex].ID != res.RuleID {
			t.Errorf("result %+v", res)
		}
		for _, loc := range res.Locations {
			u, err := url.Parse(loc.PhysicalLocation.ArtifactLocation.URI)
			if err != nil || (!u.IsAbs() && strings.HasPrefix(u.Path, "/")) || loc.PhysicalLocation.Region.StartLine < 1 {
				t.Errorf("location %+v", loc)
			}
		}
	}
	return l
}

func TestLintSARIF(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "cleanroom.yaml")
	os.WriteFile(good, []byte("version: 1\nimage: registry.example.org/b@sha256:"+strings.Repeat("0", 64)+"\nsteps:\n  - name: a\n    timeout: 1m\n    run: |\n      wget http://mirror.example.org/a\n      wget http://mirror.example.org/b\n"), 0o644)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("version: 1\nimage: busybox\nsteps:\n  - name: a\n    run: true\n"), 0o644)

	code, out, _ := cli(t, "lint", "-f", good, "-o", "sarif", "--strict")
	l := parseSARIF(t, out)
	r := l.Runs[0]
	if code != 1 || *r.Invocations[0].ExecutionSuccessful != true || r.Invocations[0].ExitCode != 1 || len(r.Results) != 2 {
		t.Fatalf("exit %d, %+v", code, r.Invocations)
	}
	if loc := r.Results[1].Locations[0].PhysicalLocation; loc.ArtifactLocation.URI != "file://"+good || loc.Region.StartLine != 8 || loc.Region.StartColumn != 12 {
		t.Errorf("second finding at %+v", loc)
	}

	code, out, _ = cli(t, "lint", "-f", bad, "-o", "sarif")
	r = parseSARIF(t, out).Runs[0]
	if code != 2 || *r.Invocations[0].ExecutionSuccessful || len(r.Results) != 1 {
		t.Fatalf("invalid file: exit %d, %+v, %d results", code, r.Invocations, len(r.Results))
	}
	res := r.Results[0]
	if res.RuleID != "invalid-pipeline" || res.Level != "error" || res.Locations[0].PhysicalLocation.Region.StartLine != 5 ||
		res.Message.Text != `steps[0].run: expected a string, got the boolean true; quote it if you mean the string: "true"` {
		t.Errorf("error result %+v", res)
	}

	code, out, _ = cli(t, "lint", "-f", filepath.Join(dir, "none.yaml"), "-o", "sarif")
	r = parseSARIF(t, out).Runs[0]
	if code != 2 || len(r.Results) != 1 || !strings.Contains(r.Results[0].Message.Text, "no such file") {
		t.Errorf("missing file: exit %d, %+v", code, r.Results)
	}
}

func TestLintDisableUnknownRule(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "cleanroom.yaml")
	os.WriteFile(p, []byte("version: 1\nimage: registry.example.org/b@sha256:"+strings.Repeat("0", 64)+"\nsteps:\n  - name: a\n    run: make\n"), 0o644)
	for _, cmd := range []string{"lint", "run"} {
		code, _, errs := cli(t, cmd, "-f", p, "--lint-disable", "CR07")
		if code != 2 || !strings.HasPrefix(errs, `cleanroom: --lint-disable: unknown lint rule "CR07"; the rules are: CR000 bad-suppression, `) {
			t.Errorf("%s: exit %d, stderr %q", cmd, code, errs)
		}
	}
	if code, out, _ := cli(t, "lint", "-f", p, "--lint-disable", "no-timeout", "--strict"); code != 0 {
		t.Errorf("disabled by name: exit %d\n%s", code, out)
	}
}
