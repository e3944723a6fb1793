package glob

import "testing"

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		pat, name string
		want      bool
	}{
		{"out/app", "out/app", true},
		{"out/*", "out/app", true},
		{"out/*", "out/sub/app", false}, // * stays in a segment
		{"out/?pp", "out/app", true},
		{"out/?pp", "out//pp", false},
		{"out/**", "out/app", true},
		{"out/**", "out/a/b/c", true},
		{"out/**/*.log", "out/a.log", true}, // ** may be no segment
		{"out/**/*.log", "out/x/y/a.log", true},
		{"out/**/*.log", "out/a.txt", false},
		{"out/**/*.log", "other/a.log", false},
		{"**/x", "x", true},
		{"**/x", "a/b/x", true},
		{"a/**/**/b", "a/b", true},
		{"a/**/b", "a/x/c", false},
		{"registry.example.org/team/**", "registry.example.org/team/sub/builder:1", true},
		{"registry.example.org/team/**", "registry.example.org/other:1", false},
		{"golang:1.*", "golang:1.26", true},
		{"team**", "team/x", false}, // inside a segment, ** is *
		{"team**", "teamx", true},
		{"[ab]/c", "a/c", true},
		{"[ab]/c", "d/c", false},
		{`\*`, "*", true},
		{`\*`, "x", false},
	} {
		g, err := Compile(tc.pat)
		if err != nil {
			t.Fatalf("%q: %v", tc.pat, err)
		}
		if got := g.Match(tc.name); got != tc.want {
			t.Errorf("%q vs %q = %v, want %v", tc.pat, tc.name, got, tc.want)
		}
	}
}

func TestMatchOrUnder(t *testing.T) {
	g := MustCompile("out/tmp")
	for name, want := range map[string]bool{"out/tmp": true, "out/tmp/x": true, "out/tmp/x/y": true, "out/tmpx": false, "out": false} {
		if g.MatchOrUnder(name) != want {
			t.Errorf("out/tmp vs %q: want %v", name, want)
		}
	}
}

func TestCompileRejects(t *testing.T) {
	for _, p := range []string{"", "a/[b", `a\`} {
		if _, err := Compile(p); err == nil {
			t.Errorf("%q compiled", p)
		}
	}
	if s := MustCompile("a/**/**/b").Segments(); len(s) != 3 {
		t.Errorf("segments %q", s)
	}
}
