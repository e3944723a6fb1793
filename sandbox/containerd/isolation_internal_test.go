package ctrexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/cleanroom-ci/cleanroom/internal/runlock"
	"github.com/cleanroom-ci/cleanroom/internal/testenv"
	"github.com/cleanroom-ci/cleanroom/internal/testimage"
	"github.com/cleanroom-ci/cleanroom/sandbox"
	"github.com/cleanroom-ci/cleanroom/sandbox/userns"
)

var testRange = userns.Range{HostUID: userns.DefaultBase + 13*userns.SlotSize, HostGID: userns.DefaultBase + 13*userns.SlotSize, Size: userns.SlotSize}

func mounted(t *testing.T, path string) bool {
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

// TestIDMapTeardownNeverRemovesThroughAMount: when an idmapped mount
// cannot be detached, the teardown fails and the user's tree, still
// reachable through the mount, keeps every file. A recursive removal of
// the mounts' directory would delete it.
func TestIDMapTeardownNeverRemovesThroughAMount(t *testing.T) {
	testenv.RequireRoot(t)
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	os.WriteFile(filepath.Join(src, "sub", "precious"), []byte("user data"), 0o644)
	e := &Executor{stateDir: t.TempDir(), runID: "teardowntest", log: hclog.NewNullLogger()}
	p := &prepared{e: e, s: sandbox.Spec{ID: "box", Mounts: []sandbox.Mount{{Source: src, Destination: "/workspace"}}}}

	unmountIDMapped = func(string) error { return errors.New("device or resource busy (test)") }
	defer func() { unmountIDMapped = userns.Unmount }()
	ms, _, err := e.idmapMounts(p, testRange)
	if err != nil {
		t.Fatal(err)
	}
	dst := ms[0].Source
	defer userns.Unmount(dst)
	if !mounted(t, dst) {
		t.Fatalf("%s is not an idmapped mount", dst)
	}
	if err := p.td.run(context.Background()); err == nil {
		t.Fatal("the teardown reported success although a mount stayed attached")
	}
	if b, err := os.ReadFile(filepath.Join(src, "sub", "precious")); err != nil || string(b) != "user data" {
		t.Fatalf("the teardown removed the user's file through the mount: %v", err)
	}
	if !mounted(t, dst) {
		t.Fatal("the mount went away, yet the test made its detach fail")
	}
	if err := userns.Unmount(dst); err != nil {
		t.Fatal(err)
	}
}

// TestShiftUndoWaitsForTheStep: the ownership walk after a step runs only
// once the step's processes are known to be gone; otherwise it changes
// nothing and says why.
func TestShiftUndoWaitsForTheStep(t *testing.T) {
	testenv.RequireRoot(t)
	root := t.TempDir()
	f := filepath.Join(root, "f")
	os.WriteFile(f, nil, 0o644)
	os.Chown(root, 1234, 2345)
	os.Chown(f, 1234, 2345)
	p := &prepared{s: sandbox.Spec{ID: "box"}, shifts: []shiftedTree{{root: root, shift: userns.ShiftOwner{Owner: userns.FileOwner{UID: 1234, GID: 2345}, Range: testRange}}}}
	undo, err := p.shiftIn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	owner := func() uint32 {
		var st unix.Stat_t
		unix.Lstat(f, &st)
		return st.Uid
	}
	if owner() != testRange.HostUID {
		t.Fatalf("In did not give the file to the step's root: %d", owner())
	}
	if err := undo(false); err == nil || !strings.Contains(err.Error(), "not confirmed gone") {
		t.Fatalf("undo while the step may run: %v", err)
	}
	if owner() != testRange.HostUID {
		t.Fatal("the walk ran although the step's processes may still be alive")
	}
	if err := undo(true); err != nil {
		t.Fatal(err)
	}
	if owner() != 1234 {
		t.Fatalf("after the step: owned by %d, want 1234", owner())
	}
}

// newRemapExecutor is an executor in a namespace of its own, so that the
// test can remove the image's id-shifted copies without disturbing other
// tests.
func newRemapExecutor(t *testing.T) (*Executor, sandbox.Image) {
	t.Helper()
	testenv.RequireRoot(t)
	if _, err := os.Stat(DefaultAddress); err != nil {
		testenv.Missing(t, "containerd at "+DefaultAddress)
	}
	archive := testimage.Busybox(t)
	locks := t.TempDir()
	lock, err := runlock.Acquire(locks)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Release() })
	state := t.TempDir()
	t.Cleanup(func() { unix.Unmount(filepath.Join(state, "netns"), unix.MNT_DETACH) })
	e, err := New(context.Background(), WithAddress(DefaultAddress), WithNamespace(testenv.Scope("cleanroom-remap-test")),
		WithRun(locks, lock.ID), WithStateDir(state), WithLogger(hclog.NewNullLogger()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	img, err := e.Resolve(context.Background(), OCIArchive+archive)
	if err != nil {
		t.Fatal(err)
	}
	dropRemapCopies(t, e)
	t.Cleanup(func() {
		e.pending.Wait() // the background teardown of a finished step
		dropRemapCopies(t, e)
	})
	return e, img
}

// remapSnapshots lists the id-shifted copies (committed and in the making).
func remapSnapshots(t *testing.T, e *Executor) (committed, active []string) {
	t.Helper()
	err := e.client.SnapshotService(snapshotter).Walk(e.nsctx(context.Background()), func(_ context.Context, info snapshots.Info) error {
		if strings.HasPrefix(info.Name, "cleanroom-userns-") {
			if info.Kind == snapshots.KindCommitted {
				committed = append(committed, info.Name)
			} else {
				active = append(active, info.Name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return committed, active
}

func dropRemapCopies(t *testing.T, e *Executor) {
	t.Helper()
	committed, active := remapSnapshots(t, e)
	for _, name := range append(active, committed...) {
		if err := e.client.SnapshotService(snapshotter).Remove(e.nsctx(context.Background()), name); err != nil {
			t.Logf("remove %s: %v", name, err)
		}
	}
}

// TestRemapOutlivesCreateTimeout: the image's id-shifted copy, made once
// per image and range, may take longer than the bound of Prepare's create
// calls (on overlayfs every chown copies a file up). Here the walk is made
// to last longer than createTimeout: Prepare still succeeds and the copy
// is kept.
func TestRemapOutlivesCreateTimeout(t *testing.T) {
	e, img := newRemapExecutor(t)
	defer func(d time.Duration) { createTimeout = d }(createTimeout)
	createTimeout = 8 * time.Second
	testHookRemapWalk = func(context.Context) { time.Sleep(createTimeout + 2*time.Second) }
	defer func() { testHookRemapWalk = nil }()

	p, err := e.Prepare(context.Background(), remapSpec(img), &bytes.Buffer{}, &bytes.Buffer{})
	if err != nil {
		t.Fatalf("Prepare with an id-shift walk longer than createTimeout: %v", err)
	}
	if err := p.Discard(); err != nil {
		t.Fatal(err)
	}
	if committed, active := remapSnapshots(t, e); len(committed) != 1 || len(active) != 0 {
		t.Fatalf("id-shifted copies: committed %v, in the making %v; want one committed", committed, active)
	}
}

// TestRemapCancelledStartsFresh: a cancel during the id-shift walk stops
// it between files, leaves no half-shifted copy, and the next Prepare
// makes the copy from the start.
func TestRemapCancelledStartsFresh(t *testing.T) {
	e, img := newRemapExecutor(t)
	ctx, cancel := context.WithCancel(context.Background())
	var walkEnded error
	testHookRemapWalk = func(wctx context.Context) {
		cancel()
		select {
		case <-wctx.Done():
			walkEnded = wctx.Err()
		case <-time.After(10 * time.Second):
		}
	}
	_, err := e.Prepare(ctx, remapSpec(img), &bytes.Buffer{}, &bytes.Buffer{})
	testHookRemapWalk = nil
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Prepare cancelled during the id-shift walk: %v, want context.Canceled", err)
	}
	if walkEnded == nil {
		t.Fatal("the caller's cancel did not reach the id-shift walk")
	}
	if committed, active := remapSnapshots(t, e); len(committed)+len(active) != 0 {
		t.Fatalf("a cancelled id-shift left copies: committed %v, in the making %v", committed, active)
	}
	var out, errb bytes.Buffer // one each: the shim copies the two streams concurrently
	res, err := e.Run(context.Background(), remapSpec(img), &out, &errb)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("the next run: %v %+v %s%s", err, res, out.String(), errb.String())
	}
	if committed, _ := remapSnapshots(t, e); len(committed) != 1 {
		t.Fatalf("the next run left copies %v, want one", committed)
	}
}

var remapSeq int

func remapSpec(img sandbox.Image) sandbox.Spec {
	remapSeq++
	return sandbox.Spec{
		ID:     fmt.Sprintf("remap-%d-%d", os.Getpid(), remapSeq),
		Image:  img,
		Args:   []string{"/bin/sh", "-c", "id -u"},
		Env:    []string{"PATH=/bin"},
		Cwd:    "/",
		Limits: sandbox.Limits{MemoryBytes: 128 << 20, CPUs: 1, Pids: 64},
	}
}
