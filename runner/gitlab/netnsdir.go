package gitlab

import (
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/cleanroom-ci/cleanroom/internal/runlock"
	"github.com/cleanroom-ci/cleanroom/runner"
)

// releaseNetNSDir undoes, after the last job, the shared bind mount that
// the first network namespace made of <state-dir>/netns (see
// sandbox/netns): with the driver called once per stage, nothing else
// ever would. It does nothing while any run is alive or any namespace
// file is left, and the unmount is not lazy: if a namespace was mounted
// under the directory in the meantime, the kernel refuses (EBUSY) and the
// directory stays as it is. One window remains: a run that has just made
// the directory shared but not yet mounted its namespace file would mount
// it in a directory no longer shared, which only loses the clean-up of
// propagated copies (see sandbox/netns), never the namespace itself.
func releaseNetNSDir(stateDir string) {
	locks, _ := os.ReadDir(runner.LocksDir(stateDir))
	for _, e := range locks {
		if id, ok := strings.CutSuffix(e.Name(), ".lock"); ok && runlock.Alive(runner.LocksDir(stateDir), id) {
			return
		}
	}
	dir := runner.NetNSDir(stateDir)
	if ents, err := os.ReadDir(dir); err != nil || len(ents) > 0 {
		return
	}
	// prepareDir may have bound it more than once (two first runs at
	// the same time).
	for i := 0; i < 4 && isMountPoint(dir); i++ {
		if unix.Unmount(dir, 0) != nil {
			return
		}
	}
}

// isMountPoint reports whether path is a mount point of this mount
// namespace.
func isMountPoint(path string) bool {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}
