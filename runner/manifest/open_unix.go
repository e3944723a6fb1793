//go:build unix

package manifest

import (
	"os"
	"syscall"
)

// openNoFollow opens path for reading without following a symlink in its
// last component, and without blocking if it turned into a FIFO since it
// was listed: the walk decided what to hash, and a file swapped for a link
// afterwards must fail rather than be read through.
func openNoFollow(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
}

// noFollowFlags are openNoFollow's flags beyond O_RDONLY.
const noFollowFlags = syscall.O_NOFOLLOW | syscall.O_NONBLOCK
