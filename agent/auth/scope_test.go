package auth

import (
	"strings"
	"testing"
)

func TestParseScope(t *testing.T) {
	for _, s := range []string{"read", "submit", "admin"} {
		got, err := ParseScope(s)
		if err != nil || string(got) != s {
			t.Errorf("ParseScope(%q) = %q, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "Read", "write", "admin "} {
		_, err := ParseScope(s)
		if err == nil {
			t.Errorf("ParseScope(%q): no error", s)
			continue
		}
		for _, want := range []string{"read", "submit", "admin"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("ParseScope(%q) error %q does not name %s", s, err, want)
			}
		}
	}
}

func TestScopeAllows(t *testing.T) {
	all := []Scope{ScopeRead, ScopeSubmit, ScopeAdmin}
	want := map[Scope]map[Scope]bool{
		ScopeRead:   {ScopeRead: true},
		ScopeSubmit: {ScopeRead: true, ScopeSubmit: true},
		ScopeAdmin:  {ScopeRead: true, ScopeSubmit: true, ScopeAdmin: true},
	}
	for _, have := range all {
		for _, need := range all {
			if got := have.Allows(need); got != want[have][need] {
				t.Errorf("%s.Allows(%s) = %v", have, need, got)
			}
		}
		if have.Allows("bogus") || have.Allows("") {
			t.Errorf("%s allows an unknown scope", have)
		}
	}
	if Scope("bogus").Allows(ScopeRead) || Scope("").Allows(ScopeRead) {
		t.Error("an unknown scope allows read")
	}
}
