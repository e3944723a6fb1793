package flock

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestTryExcludesAndSharedCoexist(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.lock")
	a, err := Try(p, Shared)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Try(p, Shared)
	if err != nil {
		t.Fatalf("a second shared lock: %v", err)
	}
	if _, err := Try(p, Exclusive); !errors.Is(err, ErrLocked) {
		t.Fatalf("exclusive while shared is held: %v, want ErrLocked", err)
	}
	if !Held(p) {
		t.Fatal("Held = false while two shared locks are held")
	}
	a.Release()
	b.Release()
	b.Release() // twice is safe
	if Held(p) {
		t.Fatal("Held = true after release")
	}
	x, err := Try(p, Exclusive)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Release()
	if _, err := Try(p, Shared); !errors.Is(err, ErrLocked) {
		t.Fatalf("shared while exclusive is held: %v, want ErrLocked", err)
	}
}

func TestAcquireWaitsForRelease(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.lock")
	held, err := Try(p, Exclusive)
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan time.Time, 1)
	go func() {
		time.Sleep(200 * time.Millisecond)
		released <- time.Now()
		held.Release()
	}()
	for _, ctx := range []context.Context{context.Background(), t.Context()} {
		l, err := Acquire(ctx, p, Exclusive)
		if err != nil {
			t.Fatal(err)
		}
		if ctx == context.Background() {
			select {
			case <-released:
			default:
				t.Fatal("Acquire returned while the other holder still held the lock")
			}
		}
		l.Release()
	}
}

func TestAcquireWithinGivesUp(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.lock")
	held, err := Try(p, Exclusive)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	_, err = AcquireWithin(p, Exclusive, 120*time.Millisecond)
	if !errors.Is(err, ErrLocked) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrLocked and DeadlineExceeded", err)
	}
}

// A lock file replaced by a link must not lock (or create) whatever the
// link points at.
func TestRefusesLinks(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	link := filepath.Join(dir, "x.lock")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Try(link, Exclusive); err == nil {
		t.Fatal("Try followed a symbolic link")
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the link's target was created: %v", err)
	}
	if Held(link) {
		t.Fatal("Held followed a symbolic link")
	}
}

func TestHeldMissingFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "none.lock")
	if Held(p) {
		t.Fatal("a missing file is held")
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("Held created the file")
	}
}
