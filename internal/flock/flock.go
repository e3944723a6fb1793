// Package flock is cleanroom's one way to take an advisory lock on a file
// (flock(2)) between processes: runs side by side on one host, GitLab
// driver calls of one job, agents sharing a data directory, writers of one
// token file or cache store. The kernel drops a flock when its holder dies,
// however it dies, so no lock outlives a crashed process and nothing has
// to clean up stale locks.
//
// Lock files are opened with O_NOFOLLOW (a lock file planted as a link
// locks nothing of ours) and never removed by this package: removing a
// lock file would let a waiter lock the old inode while a newcomer locks a
// new one. internal/runlock builds the per-run liveness locks on it.
package flock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ErrLocked is returned when another process holds a lock that was only
// tried, or held it until the wait ended.
var ErrLocked = errors.New("locked by another process")

// Kind is how a lock is held: shared locks coexist, an exclusive one
// excludes every other.
type Kind int

const (
	Exclusive Kind = iota
	Shared
)

func (k Kind) op() int {
	if k == Shared {
		return unix.LOCK_SH
	}
	return unix.LOCK_EX
}

// pollEvery is how often a wait that can be cancelled retries.
const pollEvery = 50 * time.Millisecond

// Lock is a held lock. Release (or the process's death) drops it.
type Lock struct {
	f *os.File
}

// File is the open lock file (for a holder that writes into it, e.g. its
// pid).
func (l *Lock) File() *os.File { return l.f }

// Release drops the lock and closes the file. It is safe on nil and twice.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

func open(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
}

// Acquire opens path (creating it) and waits for the lock until ctx ends.
// A context that cannot end waits in the kernel; one that can is polled,
// and its end returns an error that is both ErrLocked and ctx's error.
func Acquire(ctx context.Context, path string, kind Kind) (*Lock, error) {
	f, err := open(path)
	if err != nil {
		return nil, err
	}
	if err := wait(ctx, f, kind); err != nil {
		f.Close()
		return nil, err
	}
	return &Lock{f: f}, nil
}

func wait(ctx context.Context, f *os.File, kind Kind) error {
	if ctx.Done() == nil {
		if err := unix.Flock(int(f.Fd()), kind.op()); err != nil {
			return fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		return nil
	}
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		err := try(f, kind)
		if !errors.Is(err, ErrLocked) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrLocked, ctx.Err())
		case <-t.C:
		}
	}
}

// AcquireWithin is Acquire with a bounded wait.
func AcquireWithin(path string, kind Kind, d time.Duration) (*Lock, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return Acquire(ctx, path, kind)
}

// Try opens path (creating it) and takes the lock without waiting:
// ErrLocked when another process holds it.
func Try(path string, kind Kind) (*Lock, error) {
	f, err := open(path)
	if err != nil {
		return nil, err
	}
	return TryFile(f, kind)
}

// TryFile takes the lock on a file the caller opened (e.g. created with
// O_EXCL, so no other process can lock it first). On failure f is closed.
func TryFile(f *os.File, kind Kind) (*Lock, error) {
	if err := try(f, kind); err != nil {
		f.Close()
		return nil, err
	}
	return &Lock{f: f}, nil
}

func try(f *os.File, kind Kind) error {
	err := unix.Flock(int(f.Fd()), kind.op()|unix.LOCK_NB)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EWOULDBLOCK):
		return ErrLocked
	}
	return fmt.Errorf("lock %s: %w", f.Name(), err)
}

// Held reports whether a live process holds a lock on path. It never
// creates path: a missing file is not held.
func Held(path string) bool {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	// Our probe would itself hold the lock until Close; Close drops it.
	return errors.Is(try(f, Exclusive), ErrLocked)
}
