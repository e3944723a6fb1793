package ctrexec_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/cleanroom-ci/cleanroom/internal/runlock"
	"github.com/cleanroom-ci/cleanroom/internal/testenv"
	"github.com/cleanroom-ci/cleanroom/sandbox"
	ctrexec "github.com/cleanroom-ci/cleanroom/sandbox/containerd"
	"github.com/cleanroom-ci/cleanroom/sandbox/userns"
)

// TestUserNamespaceByDefault: the step's root is an unprivileged host
// uid (a non-identity uid_map; a root-owned file of the step belongs to
// that uid on the host), while what it writes in the workspace belongs to
// the workspace's owner.
func TestUserNamespaceByDefault(t *testing.T) {
	e, img := newExecutor(t)
	ws := t.TempDir()
	os.Chown(ws, 1234, 2345)
	os.WriteFile(filepath.Join(ws, "in.txt"), []byte("input"), 0o600)
	os.Chown(filepath.Join(ws, "in.txt"), 1234, 2345)
	// chown to a build user and tar keeping owners work in the workspace;
	// on the host those files are the owner's too.
	s := spec(img, `cat /proc/self/uid_map; id -u; cat in.txt; echo made > out.txt; mkdir -p d/e && touch d/e/f
chown 1000:1000 d/e/f && [ "$(stat -c %u d/e/f)" = 1000 ] || exit 9
touch /tmp/rootfile-`+t.Name()+`; sleep 5`)
	s.Cwd = "/workspace"
	s.Mounts = []sandbox.Mount{{Source: ws, Destination: "/workspace"}}

	type found struct {
		uid, gid uint32
		err      error
	}
	fc := make(chan found, 1)
	go func() { fc <- statFromHost(t.Name()) }()
	res, out, errOut := run(t, e, s)
	if res.ExitCode != 0 {
		t.Fatalf("exit %d: %s %s", res.ExitCode, out, errOut)
	}
	lines := strings.Fields(out)
	if len(lines) < 5 || lines[0] != "0" || lines[1] == "0" || lines[3] != "0" || lines[4] != "input" {
		t.Fatalf("uid_map / id / workspace read: %q", out)
	}
	f := <-fc
	if f.err != nil {
		t.Fatal(f.err)
	}
	if f.uid < userns.DefaultBase || f.gid < userns.DefaultBase {
		t.Fatalf("a root-owned file of the step is owned by %d:%d on the host, want an unprivileged id of cleanroom's range", f.uid, f.gid)
	}
	for _, p := range []string{"out.txt", "d", "d/e/f", "in.txt"} {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(ws, p), &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != 1234 || st.Gid != 2345 {
			t.Errorf("workspace %s owned by %d:%d on the host, want the workspace owner 1234:2345", p, st.Uid, st.Gid)
		}
	}
}

// statFromHost finds the step's process (by its root-owned file) and
// stats the file through /proc/PID/root, as the host sees it.
func statFromHost(name string) (f struct {
	uid, gid uint32
	err      error
}) {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		pids, _ := filepath.Glob("/proc/[0-9]*")
		for _, p := range pids {
			var st syscall.Stat_t
			if syscall.Stat(filepath.Join(p, "root/tmp/rootfile-"+name), &st) == nil {
				f.uid, f.gid = st.Uid, st.Gid
				return f
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	f.err = fmt.Errorf("the step's file was never seen from the host")
	return f
}

// TestHostUEventsNotSeen: a uevent listener in a step hears the host's
// device events only when the step's network namespace is the host
// user namespace's (the control, without user namespaces).
func TestHostUEventsNotSeen(t *testing.T) {
	e, img := newExecutor(t)
	legacy, _ := newExecutorWith(t, ctrexec.WithoutUserNamespaces())
	probe := `uevent /bin/sh -c 'echo "EVENT $ACTION $DEVPATH"' & sleep 4; kill $!`
	for _, c := range []struct {
		name string
		e    *ctrexec.Executor
		want bool
	}{{"userns", e, false}, {"host-userns (control)", legacy, true}} {
		ctx, cancel := context.WithCancel(context.Background())
		go triggerUEvents(ctx)
		var out, errb bytes.Buffer
		res, err := c.e.Run(context.Background(), spec(img, probe), &out, &errb)
		cancel()
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("%s: %v %+v %s", c.name, err, res, errb.String())
		}
		if got := strings.Contains(out.String(), "EVENT change"); got != c.want {
			t.Errorf("%s: host uevents seen = %v, want %v (output %q %q)", c.name, got, c.want, out.String(), errb.String())
		}
	}
}

// triggerUEvents asks the kernel to re-announce /dev/null (a "change"
// event, harmless) until ctx ends.
func triggerUEvents(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(300 * time.Millisecond):
			os.WriteFile("/sys/devices/virtual/mem/null/uevent", []byte("change"), 0o200)
		}
	}
}

// TestReapDetachesIDMapsOfDeadRuns: a run killed before its teardown
// leaves an idmapped, writable mount of the user's tree under the state
// directory. The next start detaches it and removes its mount point, and
// the tree keeps every file; a live run's mount is left alone.
func TestReapDetachesIDMapsOfDeadRuns(t *testing.T) {
	testenv.RequireRoot(t)
	if _, err := os.Stat(ctrexec.DefaultAddress); err != nil {
		testenv.Missing(t, "containerd at "+ctrexec.DefaultAddress)
	}
	locks, state := t.TempDir(), t.TempDir()
	t.Cleanup(func() { unix.Unmount(filepath.Join(state, "netns"), unix.MNT_DETACH) })
	live, err := runlock.Acquire(locks)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Release()
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "precious"), []byte("user data"), 0o644)
	r := userns.Range{HostUID: userns.DefaultBase + 17*userns.SlotSize, HostGID: userns.DefaultBase + 17*userns.SlotSize, Size: userns.SlotSize}
	deadMount := filepath.Join(state, "idmap", "0123456789ab", "cr-0123456789ab-0-build", "0")
	liveMount := filepath.Join(state, "idmap", live.ID, "cr-"+live.ID+"-0-build", "0")
	for _, m := range []string{deadMount, liveMount} {
		if err := os.MkdirAll(filepath.Dir(m), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := userns.IDMapped(src, m, userns.FileOwner{}, r); err != nil {
			t.Fatal(err)
		}
	}
	defer userns.Unmount(liveMount)
	defer userns.Unmount(deadMount)

	next, err := runlock.Acquire(locks)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Release()
	e, err := ctrexec.New(context.Background(), ctrexec.WithAddress(ctrexec.DefaultAddress),
		ctrexec.WithNamespace(testenv.Scope("cleanroom-test")), ctrexec.WithRun(locks, next.ID),
		ctrexec.WithStateDir(state), ctrexec.WithLogger(hclog.NewNullLogger()))
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
	if isMounted(t, deadMount) {
		t.Fatal("the dead run's idmapped mount is still attached")
	}
	if _, err := os.Lstat(filepath.Join(state, "idmap", "0123456789ab")); !os.IsNotExist(err) {
		t.Fatalf("the dead run's idmap directory is left: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(src, "precious")); err != nil || string(b) != "user data" {
		t.Fatalf("the source tree lost a file: %v", err)
	}
	if !isMounted(t, liveMount) {
		t.Fatal("the reaper detached a live run's mount")
	}
}

func isMounted(t *testing.T, path string) bool {
	t.Helper()
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == path {
			return true
		}
	}
	return false
}

// ramfsTree mounts a ramfs (a filesystem that cannot be idmapped, so the
// workspace takes the ownership pass) owned by 1234:2345.
func ramfsTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("none", dir, "ramfs", 0, "mode=0755"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	os.Chown(dir, 1234, 2345)
	return dir
}

// TestShiftFallbackUndoesHalfDoneIn: where the workspace cannot be
// idmapped, its files are given to the step's root before the step. When
// that pass fails half-way (here on a read-only mount inside the tree),
// what it already gave is given back to the owner.
func TestShiftFallbackUndoesHalfDoneIn(t *testing.T) {
	e, img := newExecutor(t)
	ws := ramfsTree(t)
	for _, d := range []string{"a", "b"} {
		os.Mkdir(filepath.Join(ws, d), 0o755)
		os.WriteFile(filepath.Join(ws, d, "f"), nil, 0o644)
		os.Chown(filepath.Join(ws, d), 1234, 2345)
		os.Chown(filepath.Join(ws, d, "f"), 1234, 2345)
	}
	b := filepath.Join(ws, "b")
	if err := unix.Mount(b, b, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(b, unix.MNT_DETACH)
	if err := unix.Mount("", b, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	s := spec(img, "echo must-not-run")
	s.Mounts = []sandbox.Mount{{Source: ws, Destination: "/workspace"}}
	var out, errb bytes.Buffer // one each: the shim copies the two streams concurrently
	_, err := e.Run(context.Background(), s, &out, &errb)
	if err == nil || strings.Contains(out.String(), "must-not-run") {
		t.Fatalf("the step ran although its workspace could not be given to it: %v %q", err, out.String()+errb.String())
	}
	for _, p := range []string{".", "a", "a/f"} {
		var st syscall.Stat_t
		syscall.Lstat(filepath.Join(ws, p), &st)
		if st.Uid != 1234 || st.Gid != 2345 {
			t.Errorf("%s owned by %d:%d after the failed pass, want the owner 1234:2345", p, st.Uid, st.Gid)
		}
	}
}

// TestShiftFallbackRoundTrip: through the ownership pass the step's files
// end up the owner's, and none keeps a setuid bit it set.
func TestShiftFallbackRoundTrip(t *testing.T) {
	e, img := newExecutor(t)
	ws := ramfsTree(t)
	s := spec(img, `cp /bin/busybox suid && chmod 4755 suid && mkdir d && touch d/f && chown 1000:1000 d/f && chmod 6755 d/f`)
	s.Cwd = "/workspace"
	s.Mounts = []sandbox.Mount{{Source: ws, Destination: "/workspace"}}
	res, out, errOut := run(t, e, s)
	if res.ExitCode != 0 {
		t.Fatalf("exit %d: %s %s", res.ExitCode, out, errOut)
	}
	for _, p := range []string{".", "suid", "d", "d/f"} {
		var st syscall.Stat_t
		syscall.Lstat(filepath.Join(ws, p), &st)
		if st.Uid != 1234 || st.Gid != 2345 || st.Mode&(syscall.S_ISUID|syscall.S_ISGID) != 0 {
			t.Errorf("%s: %d:%d mode %o on the host, want 1234:2345 and no set-id bit", p, st.Uid, st.Gid, st.Mode&0o7777)
		}
	}
}
