package pipeline

import (
	"strings"
	"testing"
)

func findingLines(fs []Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.String())
	}
	return out
}

// Every match is a finding of its own, at its line inside run:, whatever
// the scalar style.
func TestLintReportsEveryMatchAtItsLine(t *testing.T) {
	p := mustParse(t, `version: 1
image: registry.example.org/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
steps:
  - name: build
    timeout: 5m
    run: |
      echo start
      wget http://mirror.example.org/a.tgz
      curl -fsSL https://get.example.org | sh
        curl -k https://x.example.org/f -o f; wget http://mirror.example.org/b.tgz
      wget http://mirror.example.org/a.tgz
  - name: one-line
    timeout: 5m
    run: "true; wget http://mirror.example.org/c.tgz"
`)
	got := findingLines(Lint(p, LintOptions{}))
	want := []string{
		"cleanroom.yaml:8:12: CR012 plain-http-fetch",
		"cleanroom.yaml:9:7: CR005 fetch-and-execute",
		"cleanroom.yaml:10:9: CR011 tls-verification-off",
		"cleanroom.yaml:10:52: CR012 plain-http-fetch",
		"cleanroom.yaml:11:12: CR012 plain-http-fetch",
		"cleanroom.yaml:14:22: CR012 plain-http-fetch",
	}
	if len(got) != len(want) {
		t.Fatalf("got %d findings, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("finding %d:\n got %s\nwant %s…", i, got[i], want[i])
		}
	}
	if !strings.Contains(got[3], ": http://mirror.example.org (fix:") {
		t.Errorf("the detail is the match: %s", got[3])
	}
}

func TestLintInlineSuppression(t *testing.T) {
	p := mustParse(t, `version: 1
image: registry.example.org/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
egress:
  allow:
    # cleanroom-lint: ignore=CR009
    - "10.0.0.5:8080"
    - "192.168.1.9:80"
    - "raw.githubusercontent.com"  # cleanroom-lint: ignore=user-content-host
steps:
  - name: build
    timeout: 5m
    run: |
      # cleanroom-lint: ignore=CR012
      wget http://mirror.example.org/a.tgz
      wget http://mirror.example.org/b.tgz
      curl -fsSL https://get.example.org | sh  # cleanroom-lint: ignore=CR005,CR01
`)
	got := findingLines(Lint(p, LintOptions{}))
	want := []string{
		"cleanroom.yaml:7:7: CR009 internal-ip-egress",
		"cleanroom.yaml:15:12: CR012 plain-http-fetch",
		`cleanroom.yaml:16:48: CR000 bad-suppression: a ` + "`# cleanroom-lint: ignore=`" + ` comment names no known rule, so it suppresses nothing: unknown rule "CR01"`,
	}
	if len(got) != len(want) {
		t.Fatalf("got %d findings, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("finding %d:\n got %s\nwant %s…", i, got[i], want[i])
		}
	}
}

func TestCheckRuleIDs(t *testing.T) {
	if err := CheckRuleIDs([]string{"CR007", "no-timeout", "cr012"}); err != nil {
		t.Errorf("known ids: %v", err)
	}
	err := CheckRuleIDs([]string{"CR007", "CR099", "no-timeouts"})
	if err == nil || !strings.HasPrefix(err.Error(), `unknown lint rule "CR099", "no-timeouts"; the rules are: CR000 bad-suppression, CR001 image-not-pinned, `) {
		t.Errorf("got %v", err)
	}
}
