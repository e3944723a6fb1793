package agent

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
)

func TestCheckEgress(t *testing.T) {
	parse := func(egress string) *pipeline.Pipeline {
		t.Helper()
		src := "version: 1\nimage: alpine:3\n" + egress + "steps:\n  - name: build\n    run: \"true\"\n"
		p, err := pipeline.Parse("cleanroom.yaml", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	own := []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("8.8.4.4")}
	for _, tc := range []struct {
		egress  string
		maximum []string
		capped  bool
		want    string // "" when allowed
	}{
		{"egress:\n  allow: [deps.example.org, \"*.example.net:8443\"]\n", nil, false, ""},
		{"egress:\n  allow: [\"93.184.215.14:443\"]\n", nil, false, ""},
		{"egress:\n  allow: [\"127.0.0.1:8222\"]\n", nil, false, `cleanroom.yaml:4: egress.allow[0]: "127.0.0.1:8222" reaches loopback addresses`},
		{"egress:\n  allow: [\"169.254.169.254\"]\n", nil, false, "reaches link-local addresses"},
		{"egress:\n  allow: [\"8.8.4.0/24\"]\n", nil, false, "this agent's own address 8.8.4.4"},
		{"egress:\n  allow: [\"[::1]:8080\"]\n", nil, false, "loopback"},
		{"egress:\n  allow: [deps.example.org, \"10.1.2.3:443\"]\n", []string{"*.example.org", "10.0.0.0/8:443"}, true, ""},
		{"egress:\n  allow: [deps.example.net]\n", []string{"*.example.org"}, true, `"deps.example.net" is not within egress.maximum`},
		{"egress:\n  allow: [deps.example.org]\n", []string{}, true, "only use egress within egress.maximum: []"},
		{"egress:\n  mode: audit\n", []string{"*.example.org"}, true, "audit mode allows any host"},
		{"egress:\n  mode: audit\n", nil, false, ""},
	} {
		err := checkEgress(parse(tc.egress), tc.maximum, tc.capped, own)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q (maximum %q): refused: %v", tc.egress, tc.maximum, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q (maximum %q): %v, want %q", tc.egress, tc.maximum, err, tc.want)
		}
	}
}
