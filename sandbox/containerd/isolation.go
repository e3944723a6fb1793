package ctrexec

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/image-spec/identity"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	runc "github.com/containerd/containerd/api/types/runc/options"

	"github.com/cleanroom-ci/cleanroom/internal/toolcache"
	"github.com/cleanroom-ci/cleanroom/sandbox"
	"github.com/cleanroom-ci/cleanroom/sandbox/netns"
	"github.com/cleanroom-ci/cleanroom/sandbox/userns"
)

// Runtimes a step can run under. All plug into containerd's runc shim
// through its BinaryName option.
const (
	RuntimeRunc  = "runc"
	RuntimeCrun  = "crun"
	RuntimeRunsc = "runsc"
)

// Runtimes lists the accepted runtime names.
var Runtimes = []string{RuntimeRunc, RuntimeCrun, RuntimeRunsc}

// ValidRuntime reports whether name is a runtime cleanroom knows.
func ValidRuntime(name string) bool {
	for _, r := range Runtimes {
		if r == name {
			return true
		}
	}
	return false
}

// runtimeUsesUserNS: runc and crun run the step in a user namespace of its
// own. gVisor does not get one: its sentry is the boundary (the step's
// system calls are served by a user-space kernel, itself confined by
// seccomp and running in namespaces of its own), and its gofer serves the
// rootfs and workspace as host files.
func runtimeUsesUserNS(rt string) bool { return rt != RuntimeRunsc }

// DefaultSubIDLocks is where the host-wide id-range locks live: ranges are
// host-wide, whatever the state directory of a runner.
const DefaultSubIDLocks = "/run/cleanroom-subid"

// network is the sandbox.Network this executor makes.
type network struct {
	ns   *netns.Namespace
	slot *userns.Slot // nil: no user namespace (gVisor, or turned off)
	once sync.Once
}

func (n *network) Listen(nw, addr string) (net.Listener, error) { return n.ns.Listen(nw, addr) }

func (n *network) Dial(ctx context.Context, nw, addr string) (net.Conn, error) {
	return n.ns.Dial(ctx, nw, addr)
}

func (n *network) Close() error {
	var err error
	n.once.Do(func() {
		err = n.ns.Close()
		n.slot.Release()
	})
	return err
}

// NewNetwork makes a step's network: for runc and crun a loopback-only
// network namespace owned by a new user namespace with an id range of its
// own; for gVisor one owned by the host (gVisor uses it as its host
// network, see runtimeSpecOpts).
func (e *Executor) NewNetwork(_ context.Context, ns sandbox.NetworkSpec) (sandbox.Network, error) {
	rt := e.runtimeOf(ns.Runtime)
	dir := filepath.Join(e.stateDir, "netns")
	if !e.userns || !runtimeUsesUserNS(rt) {
		n, err := netns.New(dir, ns.ID)
		if err != nil {
			return nil, err
		}
		return &network{ns: n}, nil
	}
	slot, err := e.pool.Acquire(e.subIDLocks)
	if err != nil {
		return nil, err
	}
	n, err := netns.NewOwned(dir, ns.ID, slot.Range)
	if err != nil {
		slot.Release()
		return nil, err
	}
	return &network{ns: n, slot: slot}, nil
}

func (e *Executor) runtimeOf(rt string) string {
	if e.forceRuntime != "" {
		return e.forceRuntime
	}
	if rt == "" {
		return e.runtime
	}
	return rt
}

// ResolveRuntime implements sandbox.RuntimeResolver: the runtime a step
// asking for rt runs under (a forced one wins) and its version, or why it
// cannot run here.
func (e *Executor) ResolveRuntime(rt string) (string, string, error) {
	if rt != "" && !ValidRuntime(rt) {
		return "", "", fmt.Errorf("unknown runtime %q (want one of %s)", rt, strings.Join(Runtimes, ", "))
	}
	rt = e.runtimeOf(rt)
	if _, err := e.runtimeOptions(rt); err != nil {
		return "", "", err
	}
	return rt, e.runtimeVersion(rt), nil
}

// runtimeOptions selects the runtime binary under containerd's runc shim.
func (e *Executor) runtimeOptions(rt string) (*runc.Options, error) {
	switch rt {
	case RuntimeRunc:
		return nil, nil
	case RuntimeCrun:
		bin, err := exec.LookPath("crun")
		if err != nil {
			return nil, fmt.Errorf("runtime crun is not installed (Debian package crun): %w", err)
		}
		return &runc.Options{BinaryName: bin}, nil
	case RuntimeRunsc:
		bin, err := e.runscWrapper()
		if err != nil {
			return nil, err
		}
		return &runc.Options{BinaryName: bin}, nil
	}
	return nil, fmt.Errorf("unknown runtime %q (want one of %s)", rt, strings.Join(Runtimes, ", "))
}

// runscWrapper writes the executable the shim runs for gVisor. The runc
// shim has no option for runtime arguments (dockerd wraps runtimes the
// same way), and gVisor needs --network=host: its own network stack would
// not see the loopback of the step's namespace, where the proxy listens.
// With host networking the sentry uses that namespace's sockets, and the
// namespace holds nothing but loopback and the proxy.
func (e *Executor) runscWrapper() (string, error) {
	e.runscOnce.Do(func() {
		bin, err := exec.LookPath("runsc")
		if err != nil {
			e.runscErr = fmt.Errorf("runtime runsc is not installed (Debian package runsc): %w", err)
			return
		}
		dir := filepath.Join(e.stateDir, "runtimes")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			e.runscErr = err
			return
		}
		path := filepath.Join(dir, "runsc-host-network")
		// --oci-seccomp: the step's seccomp profile is applied inside
		// the sandbox too, in front of the sentry.
		script := fmt.Sprintf("#!/bin/sh\nexec %s --network=host --oci-seccomp \"$@\"\n", bin)
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(script), 0o700); err != nil {
			e.runscErr = err
			return
		}
		e.runscErr = os.Rename(tmp, path)
		e.runscPath = path
	})
	return e.runscPath, e.runscErr
}

// runtimeVersion is the version a runtime reports ("unknown" if it is not
// installed or says nothing parseable). The runtime is exec'd once per
// binary, not once per start: the answer is kept under the state
// directory, keyed by the binary's path, size and modification time
// (internal/toolcache).
func (e *Executor) runtimeVersion(rt string) string {
	out, err := toolcache.Output(filepath.Join(e.stateDir, "toolcache"), rt, []string{"--version"})
	if err != nil {
		return "unknown"
	}
	// "runc version 1.1.5", "crun version 1.8.1", "runsc version 0.0~20221219.0"
	first, _, _ := strings.Cut(string(out), "\n")
	if _, ver, ok := strings.Cut(first, " version "); ok {
		return strings.TrimSpace(ver)
	}
	return "unknown"
}

// withJoinedUserNS makes the step join the pinned user namespace that owns
// its network namespace. The mappings are given too: runc computes the
// host ids of container root from them (for the ownership of /dev and
// the like).
func withJoinedUserNS(path string, r userns.Range) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Linux == nil {
			s.Linux = &specs.Linux{}
		}
		ns := specs.LinuxNamespace{Type: specs.UserNamespace, Path: path}
		replaced := false
		for i, n := range s.Linux.Namespaces {
			if n.Type == specs.UserNamespace {
				s.Linux.Namespaces[i], replaced = ns, true
			}
		}
		if !replaced {
			s.Linux.Namespaces = append(s.Linux.Namespaces, ns)
		}
		s.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: r.HostUID, Size: r.Size}}
		s.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: r.HostGID, Size: r.Size}}
		return nil
	}
}

// Label of the ownership-shifted image copies, kept per id range.
const labelRemapCache = "dev.cleanroom.userns-cache"

// remapTimeout bounds the walk that makes an image's id-shifted copy. The
// copy is made once per image and range, and on overlayfs every chown
// copies the file up: a large toolchain image on a loaded host takes
// minutes, far beyond createTimeout, which bounds single daemon calls.
const remapTimeout = time.Hour

// testHookRemapWalk, when set by a test, runs in the id-shift walk of an
// image (with the walk's context) before the walk itself.
var testHookRemapWalk func(ctx context.Context)

// remappedParent returns the snapshot that a step in range r starts from:
// the image's root filesystem with every owner shifted into r, so that
// container root owns what image root owned. containerd 1.6's overlayfs
// cannot idmap (no "remap-ids" capability), so the shift is a chowned copy
// (containerd's own slow path); it is made once per image and range and
// kept (gc.root), the lowest free range being reused run after run.
//
// The daemon calls run detached from caller, each bounded by
// createTimeout (a call cancelled while the daemon carries it out could
// lose track of what it made); the walk has remapTimeout and stops between
// files when caller is cancelled. A copy is committed only once the walk
// has shifted every file; one that failed, was cancelled or was cut short
// by a crash stays an active snapshot, removed before the next attempt
// starts afresh, so a half-shifted tree never becomes a parent.
func (e *Executor) remappedParent(caller context.Context, img containerd.Image, r userns.Range) (string, error) {
	call := func(ctx context.Context) (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(ctx), createTimeout)
	}
	cctx, cancel := call(caller)
	diffIDs, err := img.RootFS(cctx)
	cancel()
	if err != nil {
		return "", err
	}
	parent := identity.ChainID(diffIDs).String()
	key := fmt.Sprintf("cleanroom-userns-%s-%d-%d", strings.TrimPrefix(parent, "sha256:"), r.HostUID, r.HostGID)
	sn := e.client.SnapshotService(snapshotter)
	e.remapMu.Lock()
	defer e.remapMu.Unlock()
	cctx, cancel = call(caller)
	_, err = sn.Stat(cctx, key)
	cancel()
	if err == nil {
		return key, nil
	}
	if err := caller.Err(); err != nil {
		return "", fmt.Errorf("id-shifted copy of the image: %w", context.Cause(caller))
	}
	t0 := time.Now()
	// The lease outlives the walk's bound, so the copy in the making is
	// never collected; after a crash it expires on its own.
	lctx, done, err := e.client.WithLease(context.WithoutCancel(caller), leases.WithExpiration(remapTimeout+2*createTimeout))
	if err != nil {
		return "", err
	}
	defer done(context.WithoutCancel(caller))
	active := key + "-remap"
	cleanup := func() {
		tctx, cancel := teardownContext(lctx)
		defer cancel()
		sn.Remove(tctx, active)
	}
	cleanup() // what an earlier attempt left: the copy starts afresh
	cctx, cancel = call(lctx)
	mounts, err := sn.Prepare(cctx, active, parent)
	cancel()
	if err != nil {
		cleanup()
		return "", fmt.Errorf("prepare id-shifted copy of the image: %w", err)
	}
	wctx, cancelWalk := context.WithTimeout(caller, remapTimeout)
	defer cancelWalk()
	shift := userns.ShiftOwner{Range: r}
	err = mount.WithTempMount(lctx, mounts, func(root string) error {
		if testHookRemapWalk != nil {
			testHookRemapWalk(wctx)
		}
		return shift.All(wctx, root)
	})
	if err != nil {
		cleanup()
		return "", fmt.Errorf("shift the image's file owners: %w", err)
	}
	cctx, cancel = call(lctx)
	err = sn.Commit(cctx, key, active, snapshots.WithLabels(map[string]string{
		labelRemapCache:         r.String(),
		"containerd.io/gc.root": time.Now().UTC().Format(time.RFC3339),
	}))
	cancel()
	if err != nil && !errdefs.IsAlreadyExists(err) {
		cleanup()
		return "", fmt.Errorf("commit id-shifted copy of the image: %w", err)
	}
	sandbox.Trace(caller, "userns.remap-image", t0, "range", r.String())
	e.log.Info("made the image's id-shifted copy for a user namespace range", "range", r.String(), "took", time.Since(t0).Round(time.Millisecond))
	return key, nil
}

// idmapRunDir is where a run's idmapped mounts live:
// <state>/idmap/<run>/<sandbox id>/<n>. The reaper finds those of dead
// runs by the run's lock; an executor tied to no run uses "_norun", which
// is never reaped.
func (e *Executor) idmapRunDir() string {
	run := e.runID
	if run == "" {
		run = idmapNoRun
	}
	return filepath.Join(e.stateDir, "idmap", run)
}

const idmapNoRun = "_norun"

// unmountIDMapped is userns.Unmount; a test makes it fail.
var unmountIDMapped = userns.Unmount

// idmapMounts gives the step's bind mounts to its root: each source is
// mounted idmapped (its owner on disk is container root) under the state
// directory, and the step binds that. Where a filesystem cannot be
// idmapped, the mount is used as is and its tree's ownership is shifted
// around the step (userns.ShiftOwner): the returned shifts.
//
// Each idmapped mount is a writable view of the source tree, so its
// teardown never removes anything recursively: a mount that could not be
// detached keeps its mount point and the directory above it, and the error
// says so (the next start's reaper detaches it once this run is gone).
func (e *Executor) idmapMounts(p *prepared, r userns.Range) (ms []sandbox.Mount, shifts []shiftedTree, err error) {
	base := filepath.Join(e.idmapRunDir(), p.s.ID)
	if err := os.MkdirAll(base, 0o700); err != nil {
		return nil, nil, err
	}
	p.td.push(func(context.Context) error {
		if err := os.Remove(base); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove the idmapped mounts' directory: %w", err)
		}
		return nil
	})
	for i, m := range p.s.Mounts {
		owner, err := userns.OwnerOf(m.Source)
		if err != nil {
			return nil, nil, err
		}
		dst := filepath.Join(base, fmt.Sprint(i))
		err = userns.IDMapped(m.Source, dst, owner, r)
		switch {
		case errors.Is(err, userns.ErrIDMapUnsupported):
			if !m.ReadOnly {
				shifts = append(shifts, shiftedTree{root: m.Source, shift: userns.ShiftOwner{Owner: owner, Range: r}})
			}
			ms = append(ms, m)
			continue
		case err != nil:
			return nil, nil, err
		}
		p.td.push(func(context.Context) error { return unmountIDMapped(dst) })
		if !m.ReadOnly {
			// What the step's non-root ids wrote goes to the owner after it.
			shifts = append(shifts, shiftedTree{root: m.Source, shift: userns.ShiftOwner{Owner: owner, Range: r}, outOnly: true})
		}
		m.Source = dst
		ms = append(ms, m)
	}
	return ms, shifts, nil
}

type shiftedTree struct {
	root    string
	shift   userns.ShiftOwner
	outOnly bool // idmapped: only the step's non-root ids need giving back
}

// shiftIn gives the fallback trees to the step's root (ShiftOwner.In)
// before the step starts. It returns the undo (ShiftOwner.Out over every
// tree) even when an In fails half-way: Out gives back whatever In gave,
// and the caller calls undo on every path.
//
// undo walks the trees only when the step's processes are known to be
// gone (stepGone): a process still running could change the tree under
// the walk. Otherwise it gives nothing back and says so; the files stay
// owned by ids of the step's range, which no one else holds while the
// run's slot is in use.
func (p *prepared) shiftIn(ctx context.Context) (undo func(stepGone bool) error, err error) {
	n := 0 // the trees that need giving back
	undo = func(stepGone bool) error {
		if n == 0 {
			return nil
		}
		if !stepGone {
			roots := make([]string, n)
			for i, sh := range p.shifts[:n] {
				roots[i] = sh.root
			}
			return fmt.Errorf("the step's processes were not confirmed gone: file ownership in %s is not given back (files stay owned by ids of range %s)", strings.Join(roots, ", "), p.shifts[0].shift.Range)
		}
		var errs []error
		for _, sh := range p.shifts[:n] {
			t0 := time.Now()
			errs = append(errs, sh.shift.Out(sh.root))
			sandbox.Trace(ctx, "userns.shift-out", t0, "id", p.s.ID)
		}
		return errors.Join(errs...)
	}
	for _, sh := range p.shifts {
		n++
		if sh.outOnly {
			continue
		}
		t0 := time.Now()
		if err := sh.shift.In(sh.root); err != nil {
			return undo, err
		}
		sandbox.Trace(ctx, "userns.shift-in", t0, "id", p.s.ID)
	}
	return undo, nil
}
