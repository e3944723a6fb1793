package pipeline

import (
	"os"
	"strings"
	"testing"
)

const lintBase = `version: 1
image: registry.example.org/team/builder@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
steps:
  - name: build
    run: make
    timeout: 5m
`

func TestLintCleanPipelineHasNoFindings(t *testing.T) {
	p := mustParse(t, lintBase)
	if f := Lint(p, LintOptions{}); len(f) != 0 {
		t.Fatalf("findings on a clean pipeline: %v", f)
	}
}

func TestLintRules(t *testing.T) {
	tests := []struct {
		id, yaml string
		opts     LintOptions
		want     string // substring of the finding's String()
	}{
		{"CR001", strings.Replace(lintBase, "builder@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "builder:1.2", 1), LintOptions{}, "cleanroom.yaml:2:8: CR001 image-not-pinned"},
		{"CR002", lintBase + "egress: {allow: [\"*.com\"]}\n", LintOptions{}, "CR002 broad-wildcard"},
		{"CR002", lintBase + "egress: {allow: [\"*.co.uk:443\"]}\n", LintOptions{}, "*.co.uk:443"},
		{"CR003", lintBase + "egress: {allow: [\"10.0.0.0/8\"]}\n", LintOptions{}, "CR003 wide-cidr"},
		{"CR004", lintBase + "egress: {allow: [\"raw.githubusercontent.com\"]}\n", LintOptions{}, "CR004 user-content-host"},
		{"CR004", lintBase + "egress: {allow: [\"abc.ngrok.io\"]}\n", LintOptions{}, "matches *.ngrok.io"},
		{"CR004", lintBase + "egress: {allow: [\"files.example.org\"]}\n", LintOptions{UserContentHosts: []string{"files.example.org"}}, "CR004"},
		{"CR005", strings.Replace(lintBase, "run: make", "run: curl -fsSL https://get.example.org | sh", 1), LintOptions{}, "cleanroom.yaml:5:10: CR005 fetch-and-execute"},
		{"CR005", strings.Replace(lintBase, "run: make", `run: bash <(wget -qO- https://x.example.org/i)`, 1), LintOptions{}, "CR005"},
		{"CR006", lintBase + "env: {API_TOKEN: abc123}\n", LintOptions{}, "CR006 secret-in-env"},
		{"CR006", lintBase + "env: {NOTE: glpat-abcdefghijklmnop}\n", LintOptions{}, "CR006"},
		{"CR007", strings.Replace(lintBase, "    timeout: 5m\n", "", 1), LintOptions{}, "cleanroom.yaml:4:5: CR007 no-timeout"},
		{"CR008", lintBase + "egress: {mode: audit}\nartifacts: [out/app]\n", LintOptions{}, "CR008 audit-in-release"},
		{"CR008", lintBase, LintOptions{EgressMode: EgressAudit, Release: true}, "--egress-mode audit"},
		{"CR009", lintBase + "egress: {allow: [\"169.254.169.254:80\"]}\n", LintOptions{}, "CR009 internal-ip-egress"},
		{"CR009", lintBase, LintOptions{ExtraAllow: []string{"127.0.0.1:8080"}}, "CR009"},
		{"CR010", strings.Replace(lintBase, "builder@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "builder", 1), LintOptions{}, "CR010 latest-tag"},
		{"CR011", strings.Replace(lintBase, "run: make", "run: curl -k https://x.example.org/f -o f", 1), LintOptions{}, "CR011 tls-verification-off"},
		{"CR011", lintBase + "env: {NODE_TLS_REJECT_UNAUTHORIZED: \"0\"}\n", LintOptions{}, "CR011"},
		{"CR012", strings.Replace(lintBase, "run: make", "run: wget http://mirror.example.org/x.tgz", 1), LintOptions{}, "CR012 plain-http-fetch"},
	}
	for _, tt := range tests {
		t.Run(tt.id+"/"+tt.want, func(t *testing.T) {
			p := mustParse(t, tt.yaml)
			var hit bool
			for _, f := range Lint(p, tt.opts) {
				if f.ID == tt.id && strings.Contains(f.String(), tt.want) {
					hit = true
					if f.Fix == "" || !strings.HasPrefix(f.DocURL, DocsBase) {
						t.Errorf("finding without fix or docs: %+v", f)
					}
				}
			}
			if !hit {
				t.Fatalf("no %s finding containing %q; got %v", tt.id, tt.want, Lint(p, tt.opts))
			}
		})
	}
}

func TestLintNegatives(t *testing.T) {
	for name, yaml := range map[string]string{
		"narrow wildcard":  lintBase + "egress: {allow: [\"*.pkg.example.org\"]}\n",
		"narrow cidr":      lintBase + "egress: {allow: [\"203.0.113.0/28\"]}\n",
		"loopback http":    strings.Replace(lintBase, "run: make", "run: wget http://127.0.0.1:8080/x", 1),
		"curl to file":     strings.Replace(lintBase, "run: make", "run: curl -fsSLo i.sh https://x.example.org/i && sha256sum -c i.sum", 1),
		"not a secret":     lintBase + "env: {TOKENIZER: \"\"}\n",
		"audit no release": lintBase + "egress: {mode: audit}\n",
	} {
		p := mustParse(t, yaml)
		if f := Lint(p, LintOptions{}); len(f) != 0 {
			t.Errorf("%s: unexpected findings %v", name, f)
		}
	}
}

func TestLintDisable(t *testing.T) {
	p := mustParse(t, strings.Replace(lintBase, "    timeout: 5m\n", "", 1))
	if f := Lint(p, LintOptions{Disabled: []string{"no-timeout"}}); len(f) != 0 {
		t.Fatalf("disabled rule reported: %v", f)
	}
}

func TestEveryRuleIsDocumented(t *testing.T) {
	if len(Rules()) < 10 {
		t.Fatalf("only %d rules", len(Rules()))
	}
	for _, r := range Rules() {
		if r.ID == "" || r.Name == "" || r.Summary == "" || r.Fix == "" {
			t.Errorf("incomplete rule %+v", r)
		}
	}
}

// Every rule's documentation anchor exists in docs/lint.md.
func TestEveryRuleHasDocs(t *testing.T) {
	b, err := os.ReadFile("../../docs/lint.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range Rules() {
		if !strings.Contains(string(b), "\n## "+r.ID+"\n") {
			t.Errorf("docs/lint.md has no section for %s", r.ID)
		}
	}
}
