package vary

import (
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want []string
		err  string
	}{
		{nil, All, ""},
		{[]string{"all"}, All, ""},
		{[]string{"none"}, nil, ""},
		{[]string{"uid,hostname"}, []string{UID, Hostname}, ""},
		{[]string{"all,-locale,-uid"}, slices.DeleteFunc(slices.Clone(All), func(s string) bool { return s == Locale || s == UID }), ""},
		{[]string{"clock"}, nil, "time namespace"},
		{[]string{"all,-clock"}, All, ""},
		{[]string{"colour"}, nil, "unknown variation"},
	} {
		got, err := Parse(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("Parse(%q): error %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("Parse(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
}

func TestPlansDiffer(t *testing.T) {
	a, b := For(All, 1), For(All, 2)
	if a.WorkspaceDir == b.WorkspaceDir || a.UID == b.UID || a.TZ == b.TZ || a.HashSeed(1) == b.HashSeed(2) {
		t.Fatalf("two builds vary alike: %+v %+v", a, b)
	}
	if (*Plan)(nil).HashSeed(0) != ReferenceHashSeed || For(nil, 1).HashSeed(1) != ReferenceHashSeed {
		t.Fatal("the reference's hash seed is not fixed")
	}
	if len(a.Describe()) != len(a.Names) {
		t.Fatalf("describe %v for %v", a.Describe(), a.Names)
	}
}
