package netns

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/cleanroom-ci/cleanroom/internal/flock"
)

// lockDir takes the lock that orders prepareDir and the pinning of a
// namespace file in dir against ReleaseDir: without it a release could
// unmount dir after a run made it shared but before that run's namespace
// file is in it, and the namespace would be pinned in a directory that no
// longer propagates its unmount (see prepareDir). The lock is a file
// beside dir, not dir itself: an open descriptor on the mount would make
// the release's unmount fail with EBUSY. It is held for milliseconds.
func lockDir(dir string) (*flock.Lock, error) {
	l, err := flock.Acquire(context.Background(), dir+".lock", flock.Exclusive)
	if err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	return l, nil
}

// ReleaseDir undoes prepareDir once no run needs dir: it removes the bind
// mount of dir onto itself, so that a state directory chosen for one run
// (--state-dir under /tmp, say) or left by the last GitLab job keeps no
// mount behind and can be deleted. It does nothing while busy reports true
// (another run is alive and may be about to pin a namespace; nil means
// never busy) or while dir holds any file. Runs pin their namespaces under
// the same lock, so no namespace can appear between that check and the
// unmount; and the unmount is not lazy, so a mount the check could not see
// (another mount namespace's) makes it fail with EBUSY and leaves
// everything in place.
func ReleaseDir(dir string, busy func() bool) error {
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	l, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer l.Release()
	if busy != nil && busy() {
		return nil
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("netns: %w", err)
	}
	if len(ents) > 0 {
		return nil
	}
	// Releases from before this lock existed may have bound dir more than
	// once (two first runs at the same time): unmount until dir is no
	// longer a mount point (EINVAL).
	for i := 0; i < 4; i++ {
		err := unix.Unmount(dir, 0)
		switch {
		case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EBUSY):
			return nil
		case err != nil:
			return fmt.Errorf("netns: unmount %s: %w", dir, err)
		}
	}
	return nil
}
