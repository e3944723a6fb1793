//go:build !unix

package manifest

import "os"

// openNoFollow falls back to a plain open where O_NOFOLLOW does not exist;
// the walk has already refused symlinks, so only a concurrent swap could be
// followed.
func openNoFollow(path string) (*os.File, error) {
	return os.Open(path)
}

// noFollowFlags are openNoFollow's flags beyond O_RDONLY.
const noFollowFlags = 0
