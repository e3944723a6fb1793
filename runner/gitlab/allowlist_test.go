package gitlab

import (
	"slices"
	"strings"
	"testing"

	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
)

func TestEffectiveAllow(t *testing.T) {
	p := &Policy{
		DefaultAllow: []string{"mirror.internal.test"},
		MaximumAllow: []string{"*.example.org", "10.0.0.0/8:8080"},
		JobMayWiden:  true,
	}
	got, err := EffectiveAllow(p, nil)
	if err != nil || !slices.Equal(got, []string{"mirror.internal.test"}) {
		t.Fatalf("no request: %v %v", got, err)
	}
	got, err = EffectiveAllow(p, ParseEgressRequest("deps.example.org, 10.1.2.3:8080\nWWW.Example.org:443 deps.example.org"))
	if err != nil || !slices.Equal(got, []string{"mirror.internal.test", "deps.example.org", "10.1.2.3:8080", "www.example.org:443"}) {
		t.Fatalf("covered request: %v %v", got, err)
	}
	_, err = EffectiveAllow(p, []string{"deps.example.org", "evil.example.com", "10.1.2.3"})
	if err == nil || !strings.Contains(err.Error(), `"evil.example.com"`) || !strings.Contains(err.Error(), `"10.1.2.3"`) || strings.Contains(err.Error(), `"deps.example.org"`) {
		t.Fatalf("uncovered request: %v", err)
	}
	if _, err = EffectiveAllow(p, []string{"not a rule"}); err == nil {
		t.Fatal("an invalid rule was accepted")
	}
	p.JobMayWiden = false
	if _, err = EffectiveAllow(p, []string{"deps.example.org"}); err == nil || !strings.Contains(err.Error(), "job_may_widen") {
		t.Fatalf("widening while not allowed: %v", err)
	}
}

func TestServerRule(t *testing.T) {
	for in, want := range map[string]string{
		"https://gitlab.example.com":        "gitlab.example.com:443",
		"https://GitLab.Example.com/":       "gitlab.example.com:443",
		"http://gitlab.example.com":         "gitlab.example.com:80",
		"https://gitlab.example.com:8443/x": "gitlab.example.com:8443",
		"http://127.0.0.1:3000":             "127.0.0.1:3000",
		"http://[::1]:3000":                 "[::1]:3000",
		"ftp://gitlab.example.com":          "",
		"gitlab.example.com":                "",
		"":                                  "",
	} {
		got, err := ServerRule(in)
		if (err != nil) != (want == "") || got != want {
			t.Errorf("ServerRule(%q) = %q, %v; want %q", in, got, err, want)
		}
		if want == "" {
			continue
		}
		r, _ := egress.ParseRule(got)
		if strings.HasPrefix(in, "http://127") && !r.IsIP() {
			t.Errorf("%q: an IP literal must give an IP rule", in)
		}
	}
}
