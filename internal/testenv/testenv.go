// Package testenv decides what a test does when a prerequisite is missing:
// on a developer's machine it skips with a loud reason, under CI=true it
// fails, so a missing daemon can never turn into a green run that tested
// nothing.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// CI reports whether the tests run under CI (CI=true).
func CI() bool { return os.Getenv("CI") == "true" }

// Missing skips (locally) or fails (under CI) the test.
func Missing(t testing.TB, what string) {
	t.Helper()
	if CI() {
		t.Fatalf("prerequisite missing under CI=true: %s", what)
	}
	t.Skipf("SKIP: prerequisite missing: %s (set up with `make test`)", what)
}

// RequireRoot needs uid 0 (namespaces, mounts, containerd).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "root privileges")
	}
}

// RequireBinary needs an executable on PATH and returns its path.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, name+" on PATH")
	}
	return p
}

// Scope returns name with $CLEANROOM_TEST_SCOPE appended (as "-SCOPE"), so
// that two checkouts running the same suites on one machine use distinct
// containerd namespaces and state directories and never see each other's
// residue. Empty by default: CI runs one checkout.
func Scope(name string) string {
	if s := os.Getenv("CLEANROOM_TEST_SCOPE"); s != "" {
		return name + "-" + s
	}
	return name
}
