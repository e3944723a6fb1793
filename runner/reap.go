package runner

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/cleanroom-ci/cleanroom/internal/runlock"
	"github.com/cleanroom-ci/cleanroom/sandbox/netns"
)

// LocksDir is where run locks live under the state directory.
func LocksDir(stateDir string) string { return filepath.Join(stateDir, "locks") }

// ReleaseNetNSDir removes the mount that the first network namespace made
// of the state directory's namespace directory, once no run but self (the
// caller's own run id, "" for none) is alive and no namespace is left in
// it (see netns.ReleaseDir). Both the CLI, at the end of a run, and the
// GitLab driver, after the last job's cleanup, call it.
func ReleaseNetNSDir(stateDir, self string) error {
	return netns.ReleaseDir(NetNSDir(stateDir), func() bool { return otherRunAlive(stateDir, self) })
}

// otherRunAlive reports whether a run other than self holds its run lock.
func otherRunAlive(stateDir, self string) bool {
	ents, _ := os.ReadDir(LocksDir(stateDir))
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".lock")
		if ok && id != self && runlock.Alive(LocksDir(stateDir), id) {
			return true
		}
	}
	return false
}

// Reap removes the network namespaces and staging directories of runs that
// died without cleaning up (SIGKILL, a crash), then forgets their locks.
// Call it after the executor has reaped its own residue of those runs
// (ctrexec.New does), since a dead run's container may still hold a
// namespace.
func Reap(stateDir string, log hclog.Logger) {
	dead, err := runlock.Dead(LocksDir(stateDir))
	if err != nil {
		log.Warn("cannot list run locks", "error", err)
		return
	}
	for _, id := range dead {
		paths, _ := netns.List(NetNSDir(stateDir), "cr-"+id+"-")
		for _, p := range paths {
			log.Info("reaping network namespace of a dead run", "path", p)
			if err := netns.Remove(p); err != nil {
				log.Warn("cannot remove namespace", "path", p, "error", err)
			}
		}
		ws := &runWorkspace{Mode: WorkspaceFresh, mnt: filepath.Join(WorkspacesDir(stateDir), id), img: filepath.Join(WorkspacesDir(stateDir), id+".img")}
		if _, err := os.Lstat(ws.mnt); err == nil {
			log.Info("reaping the workspace of a dead run", "path", ws.mnt)
			if err := ws.remove(); err != nil {
				log.Warn("cannot remove workspace", "path", ws.mnt, "error", err)
			}
		}
		os.RemoveAll(filepath.Join(stateDir, "runs", id))
		runlock.Forget(LocksDir(stateDir), id)
	}
}
