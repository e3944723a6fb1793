package imagepattern

import (
	"strings"
	"testing"

	"github.com/distribution/reference"
)

func fullName(s string) string {
	n, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		panic(err)
	}
	return n.Name()
}

func allowed(t *testing.T, s Set, image string) (bool, string) {
	t.Helper()
	img, err := ParseImage(image)
	if err != nil {
		return false, err.Error()
	}
	return s.Match(img)
}

func TestMatch(t *testing.T) {
	digest := "@sha256:" + strings.Repeat("b", 64)
	s, err := Parse([]string{
		"debian:bookworm-*",
		fullName("node") + ":2?",
		"ci.example.net/base/*" + "@sha256:*",
		"ci.example.net/tools/**",
		"!ci.example.net/tools/**/nightly*",
		"docker-archive:/opt/ci/**",
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		image string
		ok    bool
	}{
		{"debian:bookworm-slim", true},
		{fullName("debian") + ":bookworm-slim", true}, // the full form matches the familiar pattern
		{"debian:trixie", false},
		{"node:22", true}, // the familiar form matches the full pattern
		{"node:8", false},
		{"mirror.example/library/node:22", false},
		{"ci.example.net/base/go" + digest, true},
		{"ci.example.net/base/go:1", false}, // a tag is not a digest
		{"ci.example.net/tools/lint:3", true},
		{"ci.example.net/tools/a/b/c:3", true}, // ** crosses segments
		{"ci.example.net/tools/a/nightly-x:1", false},
		{"ci.example.net/tools/nightly:1", false}, // ** may be no segment
		{"docker-archive:/opt/ci/x/y.tar", true},
		{"docker-archive:/opt/ci/../../root/y.tar", false}, // not clean
		{"oci-archive:/opt/ci/y.tar", false},               // another kind
		{"docker-archive:opt/ci/y.tar", false},             // not absolute
		{"", false},
	} {
		if ok, why := allowed(t, s, tc.image); ok != tc.ok {
			t.Errorf("%q: allowed=%v (%s), want %v", tc.image, ok, why, tc.ok)
		}
	}
}

// An exclusion wins wherever it stands in the list and names itself.
func TestExclusionWins(t *testing.T) {
	s := MustParse([]string{"!registry.example.org/team/untrusted/**", "registry.example.org/**"})
	ok, by := allowed(t, s, "registry.example.org/team/untrusted/x:1")
	if ok || by != "!registry.example.org/team/untrusted/**" {
		t.Fatalf("allowed=%v excludedBy=%q", ok, by)
	}
	if ok, _ := allowed(t, s, "registry.example.org/team/x:1"); !ok {
		t.Fatal("registry.example.org/team/x:1 not allowed")
	}
	// Only exclusions allow nothing.
	if ok, _ := allowed(t, MustParse([]string{"!x/**"}), "alpine:3"); ok {
		t.Fatal("a list of exclusions allowed an image")
	}
}

func TestParseRejects(t *testing.T) {
	for _, p := range []string{"", "!", "a b", "!!x", "x[", "golang:1.*!"} {
		if err := Check(p); err == nil {
			t.Errorf("%q accepted", p)
		}
	}
	if _, err := Parse([]string{"ok:*", "bad["}); err == nil || !strings.HasPrefix(err.Error(), "[1]: ") {
		t.Errorf("err = %v, want one naming index 1", err)
	}
}
