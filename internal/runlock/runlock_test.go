package runlock

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cleanroom-ci/cleanroom/internal/testenv"
)

func TestAliveWhileHeldDeadAfterRelease(t *testing.T) {
	dir := t.TempDir()
	l, err := Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !Alive(dir, l.ID) {
		t.Fatal("held lock reported dead")
	}
	if dead, _ := Dead(dir); len(dead) != 0 {
		t.Fatalf("Dead = %v while held", dead)
	}
	if err := Forget(dir, l.ID); err == nil {
		t.Fatal("Forget of a live run succeeded")
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if Alive(dir, l.ID) {
		t.Fatal("released lock reported alive")
	}
	if err := l.Release(); err != nil {
		t.Fatalf("second Release: %v", err)
	}
}

// A lock file left by a process that died (here: a lock file nobody holds)
// is reported dead and can be forgotten.
func TestDeadAfterProcessExit(t *testing.T) {
	dir := t.TempDir()
	// A child process takes the lock with flock(1) semantics and exits.
	testenv.RequireBinary(t, "flock")
	path := filepath.Join(dir, "abc123"+suffix)
	if err := exec.Command("flock", path, "true").Run(); err != nil {
		t.Fatal(err)
	}
	dead, err := Dead(dir)
	if err != nil || !slices.Equal(dead, []string{"abc123"}) {
		t.Fatalf("Dead = %v, %v", dead, err)
	}
	if err := Forget(dir, "abc123"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatal("lock file not removed")
	}
}

func TestAliveRejectsOddIDs(t *testing.T) {
	for _, id := range []string{"", "../x", "a\x00b"} {
		if Alive(t.TempDir(), id) {
			t.Errorf("Alive(%q) = true", id)
		}
	}
}
