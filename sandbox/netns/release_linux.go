package netns

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ReleaseDir undoes prepareDir once dir holds no namespace: it removes the
// bind mount of dir onto itself, so that a state directory chosen for one
// run (--state-dir under /tmp, say) leaves no mount behind and can be
// deleted. A dir that still holds a namespace file, or is not a mount
// point, is left as it is; a plain (not lazy) unmount also fails, leaving
// everything in place, while another run has a namespace mounted in it.
func ReleaseDir(dir string) error {
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
	err = unix.Unmount(dir, 0)
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EBUSY) {
		return nil
	}
	return fmt.Errorf("netns: unmount %s: %w", dir, err)
}
