package gitlab

import (
	"slices"
	"strings"
	"testing"

	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
)

func TestCovers(t *testing.T) {
	for _, tc := range []struct {
		max, rule string
		want      bool
	}{
		{"example.org", "example.org", true},
		{"example.org", "example.org:443", true},
		{"example.org", "example.org:8443", false}, // no port means 80 and 443 only
		{"example.org:443", "example.org", false},  // 80 is not covered
		{"example.org:8443", "example.org:8443", true},
		{"example.org", "www.example.org", false},
		{"*.example.org", "www.example.org", true},
		{"*.example.org", "a.b.example.org:443", true},
		{"*.example.org", "example.org", false}, // a wildcard is one or more labels below
		{"*.example.org", "*.example.org", true},
		{"*.example.org", "*.b.example.org", true},
		{"*.b.example.org", "*.example.org", false},
		{"*.example.org", "*.org", false},
		{"www.example.org", "*.example.org", false}, // a name never covers a wildcard
		{"*.example.org:80", "*.example.org", false},
		{"*.xample.org", "www.example.org", false}, // label boundaries
		{"10.0.0.0/8", "10.1.2.3", true},
		{"10.0.0.0/8", "10.1.0.0/16", true},
		{"10.0.0.0/16", "10.0.0.0/8", false},
		{"10.0.0.0/8:8080", "10.0.0.5:8080", true},
		{"10.0.0.0/8:8080", "10.0.0.5", false},
		{"10.0.0.0/8", "11.0.0.1", false},
		{"fd00::/8", "fd12::1", true},
		{"[fd00::/8]:8080", "[fd12::1]:8080", true},
		{"[fd00::/8]:8080", "[fd12::/16]:8080", true},
		{"fd00::/8", "fe80::1", false},
		{"127.0.0.1:5000", "127.0.0.1:5000", true},
		{"example.org", "10.0.0.1", false}, // names never cover addresses
		{"10.0.0.0/8", "example.org", false},
	} {
		m, err := egress.ParseRule(tc.max)
		if err != nil {
			t.Fatal(err)
		}
		r, err := egress.ParseRule(tc.rule)
		if err != nil {
			t.Fatal(err)
		}
		if got := Covers(m, r); got != tc.want {
			t.Errorf("Covers(%q, %q) = %v, want %v", tc.max, tc.rule, got, tc.want)
		}
	}
}

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
