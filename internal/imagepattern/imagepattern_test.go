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
	s, err := Parse([]string{
		fullName("golang") + ":*",
		"alpine:3.*",
		"registry.example.org/team/**",
		"!registry.example.org/team/untrusted/**",
		"oci-archive:/srv/images/*.tar",
		"docker-archive:/srv/images/**",
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		image string
		ok    bool
	}{
		{"golang:1.26", true},                               // familiar form, normalised by the reference library
		{fullName("golang") + ":1.26", true},                // full form
		{"golang", true},                                    // :latest
		{"golang@sha256:" + strings.Repeat("a", 64), false}, // a digest is not a tag
		{"evil.example/library/golang:1.26", false},
		{"alpine:3.20", true},
		{"alpine:edge", false},
		{"registry.example.org/team/builder:1", true},
		{"registry.example.org/team/sub/builder:1", true}, // ** crosses segments
		{"registry.example.org/team/untrusted/x:1", false},
		{"registry.example.org/team/untrusted/deep/x:1", false},
		{"registry.example.org/other:1", false},
		{"oci-archive:/srv/images/builder.tar", true},
		{"oci-archive:/srv/images/sub/builder.tar", false}, // * stays in a segment
		{"oci-archive:/srv/images/../../etc/shadow.tar", false},
		{"oci-archive:images/builder.tar", false},
		{"docker-archive:/srv/images/a/b.tar", true},
		{"docker-archive:/srv/other/b.tar", false},
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
