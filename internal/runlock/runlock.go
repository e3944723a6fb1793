// Package runlock tells live runs from dead ones. Every run holds an
// exclusive flock on <dir>/<id>.lock for its whole life; the kernel drops the
// lock when the process dies, however it dies (SIGKILL, OOM, power loss of
// the process). Anything a run creates is tagged with its id, so a later
// start can reap exactly what belongs to runs whose lock is free, and never
// touch what a concurrent, live run owns.
package runlock

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cleanroom-ci/cleanroom/internal/flock"
)

const suffix = ".lock"

// Lock is a held run lock.
type Lock struct {
	ID   string
	dir  string
	lock *flock.Lock
}

// NewID returns a short random run id: 12 hex characters, safe inside
// container ids, file names and labels.
func NewID() string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

// Acquire creates and locks a new run lock in dir.
func Acquire(dir string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("runlock: %w", err)
	}
	id := NewID()
	f, err := os.OpenFile(filepath.Join(dir, id+suffix), os.O_CREATE|os.O_EXCL|os.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("runlock: %w", err)
	}
	// O_EXCL: the file, and so the id, is this run's alone.
	l, err := flock.TryFile(f, flock.Exclusive)
	if err != nil {
		return nil, fmt.Errorf("runlock: lock %s: %w", f.Name(), err)
	}
	fmt.Fprintf(f, "%d\n", os.Getpid())
	return &Lock{ID: id, dir: dir, lock: l}, nil
}

// Release unlocks and removes the lock file.
func (l *Lock) Release() error {
	if l == nil || l.lock == nil {
		return nil
	}
	// Removed while still locked: a reaper never sees the file of a run
	// that is still going unlocked. Only this run ever locks it.
	err := os.Remove(l.lock.File().Name())
	l.lock.Release()
	l.lock = nil
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	return err
}

// Alive reports whether the run with this id still holds its lock. An id
// without a lock file is dead.
func Alive(dir, id string) bool {
	if id == "" || strings.ContainsAny(id, "/\x00") {
		return false
	}
	return flock.Held(filepath.Join(dir, id+suffix))
}

// Dead lists the ids of lock files in dir whose run is gone.
func Dead(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), suffix)
		if ok && !Alive(dir, id) {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// Forget removes the lock file of a dead run once its residue is reaped.
func Forget(dir, id string) error {
	if Alive(dir, id) {
		return fmt.Errorf("runlock: run %s is alive", id)
	}
	err := os.Remove(filepath.Join(dir, id+suffix))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
