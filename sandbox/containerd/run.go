package ctrexec

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	runc "github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cleanroom-ci/cleanroom/sandbox"
)

// teardownTimeout bounds cleanup, which runs on a context of its own so
// that a cancelled run still removes everything it created.
const teardownTimeout = 30 * time.Second

// Run runs one step in a fresh container and removes the container, its
// task and its snapshot before returning.
func (e *Executor) Run(ctx context.Context, s sandbox.Spec, stdout, stderr io.Writer) (sandbox.Result, error) {
	p, err := e.Prepare(ctx, s, stdout, stderr)
	if err != nil {
		return sandbox.Result{}, err
	}
	return p.Start(ctx)
}

// prepared is a created container and task (the shim started, runc's init
// waiting in the step's namespaces) whose process has not started yet.
type prepared struct {
	e         *Executor
	s         sandbox.Spec
	ctx       context.Context // the namespace context of Prepare, for teardown
	container containerd.Container
	task      containerd.Task
	spec      *specs.Spec
	td        teardown
	stdout    io.Writer
	stderr    io.Writer
	shifts    []shiftedTree // ownership passes around the step (isolation.go)
	once      sync.Once
}

// Prepare creates the step's container and task without starting it:
// creating the task (starting the shim, runc create) is most of a step's
// start-up, and the runner does it for the next step while the current
// one runs. The sandbox exists from here on: Start or Discard removes it.
func (e *Executor) Prepare(ctx context.Context, s sandbox.Spec, stdout, stderr io.Writer) (_ sandbox.Prepared, err error) {
	ctx = e.nsctx(ctx)
	img, err := e.client.GetImage(ctx, s.Image.Name)
	if err != nil {
		return nil, fmt.Errorf("image %s is not available locally: %w", s.Image.Ref, err)
	}
	labels := e.labels(s)
	p := &prepared{e: e, s: s, ctx: context.WithoutCancel(ctx)}
	// On failure, remove what was created before returning.
	defer func() {
		if err != nil {
			if terr := p.td.run(p.ctx); terr != nil {
				err = errors.Join(err, terr)
			}
		}
	}()

	// The lease keeps the new snapshot from being garbage collected while
	// the container is created; it expires on its own if we crash.
	lctx, doneLease, err := e.client.WithLease(ctx,
		leases.WithExpiration(24*time.Hour), leases.WithLabels(labels))
	if err != nil {
		return nil, fmt.Errorf("create lease: %w", err)
	}
	// Teardown runs in reverse order of creation.
	p.td.push(func(tctx context.Context) error {
		if lerr := doneLease(tctx); lerr != nil && !errdefs.IsNotFound(lerr) {
			return fmt.Errorf("release lease: %w", lerr)
		}
		return nil
	})

	rt := e.runtimeOf(s.Runtime)
	rtOpts, err := e.runtimeOptions(rt)
	if err != nil {
		return nil, err
	}
	nw, err := e.stepNetwork(ctx, p, rt)
	if err != nil {
		return nil, err
	}
	snap := containerd.WithNewSnapshot(s.ID, img, snapshots.WithLabels(labels))
	if nw.slot != nil {
		t0 := time.Now()
		parent, err := e.remappedParent(ctx, img, nw.slot.Range)
		if err != nil {
			return nil, err
		}
		sn := e.client.SnapshotService(snapshotter)
		// Not cancelled half-way: a snapshot made by a request whose
		// answer was lost to a cancel would have no teardown.
		if _, err := sn.Prepare(context.WithoutCancel(lctx), s.ID, parent, snapshots.WithLabels(labels)); err != nil {
			return nil, fmt.Errorf("prepare snapshot: %w", err)
		}
		// Removed with the container normally; this covers a container
		// that was never created (a cancel in between).
		p.td.push(func(tctx context.Context) error {
			if rerr := sn.Remove(tctx, s.ID); rerr != nil && !errdefs.IsNotFound(rerr) {
				return fmt.Errorf("remove snapshot: %w", rerr)
			}
			return nil
		})
		snap = containerd.WithSnapshot(s.ID)
		// A step reopens its output (`echo x > /dev/stderr` opens the pipe
		// again through /proc): the shim makes the pipes its root's.
		if rtOpts == nil {
			rtOpts = &runc.Options{}
		}
		rtOpts.IoUid, rtOpts.IoGid = nw.slot.Range.HostUID, nw.slot.Range.HostGID
		if s.Mounts, p.shifts, err = e.idmapMounts(p, nw.slot.Range); err != nil {
			return nil, err
		}
		sandbox.Trace(ctx, "userns.prepare", t0, "id", s.ID)
	}

	t0 := time.Now()
	// Created on a context a cancel does not end (the container would
	// exist without a teardown otherwise); the cancel is noticed next.
	p.container, err = e.client.NewContainer(context.WithoutCancel(lctx), s.ID,
		containerd.WithContainerLabels(labels),
		containerd.WithImageName(img.Name()),
		containerd.WithSnapshotter(snapshotter),
		snap,
		containerd.WithRuntime(runtimeName, rtOpts),
		containerd.WithNewSpec(specOpts(img, s, nw, rt)...),
	)
	if err != nil {
		return nil, fmt.Errorf("create container: %w", err)
	}
	sandbox.Trace(ctx, "container.create", t0, "id", s.ID)
	p.td.push(func(tctx context.Context) error {
		t0 := time.Now()
		defer sandbox.Trace(ctx, "container.delete", t0, "id", s.ID)
		if derr := p.container.Delete(tctx, containerd.WithSnapshotCleanup); derr != nil && !errdefs.IsNotFound(derr) {
			return fmt.Errorf("delete container: %w", derr)
		}
		return nil
	})
	if p.spec, err = p.container.Spec(ctx); err != nil {
		return nil, fmt.Errorf("read spec: %w", err)
	}

	p.stdout, p.stderr = stdout, stderr
	if rt == RuntimeRunsc {
		// gVisor (Debian's runsc) can neither kill nor delete a task that
		// was created and never started, so a gVisor step that might be
		// discarded (the look-ahead) gets its task when it starts.
		return p, nil
	}
	if err := p.createTask(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// createTask starts the shim and creates the task (runc create): the
// step's process waits in its namespaces until Start.
func (p *prepared) createTask(ctx context.Context) error {
	s, e := p.s, p.e
	t0 := time.Now()
	task, err := p.container.NewTask(context.WithoutCancel(ctx), cio.NewCreator(cio.WithStreams(nil, p.stdout, p.stderr), cio.WithFIFODir(e.fifoDir())))
	if err != nil {
		return fmt.Errorf("create task: %w", err)
	}
	p.task = task
	sandbox.Trace(ctx, "task.create", t0, "id", s.ID)
	p.td.push(func(tctx context.Context) error {
		t0 := time.Now()
		defer sandbox.Trace(ctx, "task.delete", t0, "id", s.ID)
		// A task that exited is deleted as it is: gVisor refuses to kill
		// a sandbox that is already gone.
		_, derr := task.Delete(tctx)
		if errdefs.IsFailedPrecondition(derr) {
			_, derr = task.Delete(tctx, containerd.WithProcessKill)
		}
		if derr != nil && !errdefs.IsNotFound(derr) {
			return fmt.Errorf("delete task: %w", derr)
		}
		return nil
	})
	return nil
}

// stepNetwork is the network the spec brings (made by NewNetwork), or a
// new one the sandbox owns and removes.
func (e *Executor) stepNetwork(ctx context.Context, p *prepared, rt string) (*network, error) {
	if p.s.Network != nil {
		nw, ok := p.s.Network.(*network)
		if !ok {
			return nil, fmt.Errorf("the step's network was not made by this executor (%T)", p.s.Network)
		}
		if (nw.slot != nil) != (e.userns && runtimeUsesUserNS(rt)) {
			return nil, fmt.Errorf("the step's network was made for another runtime than %s", rt)
		}
		return nw, nil
	}
	n, err := e.NewNetwork(ctx, sandbox.NetworkSpec{ID: p.s.ID, Runtime: rt})
	if err != nil {
		return nil, err
	}
	p.td.push(func(context.Context) error { return n.Close() })
	return n.(*network), nil
}

// Discard removes a prepared sandbox that will not run.
func (p *prepared) Discard() error {
	var err error
	p.once.Do(func() { err = p.td.run(p.ctx) })
	return err
}

// Start runs the prepared step to completion and removes its sandbox.
func (p *prepared) Start(ctx context.Context) (res sandbox.Result, err error) {
	started := false
	p.once.Do(func() { started = true })
	if !started {
		return res, errors.New("sandbox already started or discarded")
	}
	e, s := p.e, p.s
	ctx = e.nsctx(ctx)
	// After a normal exit the teardown runs in the background (the next
	// step runs meanwhile) and Close waits for it; on every other path it
	// runs before Start returns.
	async := false
	defer func() {
		if async {
			e.pending.Add(1)
			go func() {
				defer e.pending.Done()
				if terr := p.td.run(p.ctx); terr != nil {
					e.noteTeardownError(s.ID, terr)
				}
			}()
			return
		}
		if terr := p.td.run(p.ctx); terr != nil && err == nil {
			err = terr
		}
	}()
	if err := ctx.Err(); err != nil {
		res.Cancelled = true
		return res, nil
	}
	if p.task == nil {
		if err := p.createTask(ctx); err != nil {
			return res, err
		}
	}
	task := p.task

	// Wait must be subscribed before Start, and on a context that the
	// run's cancellation does not end: after a cancel we still need the
	// exit of the task we kill.
	waitCtx, stopWait := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWait()
	exitc, err := task.Wait(waitCtx)
	if err != nil {
		return res, fmt.Errorf("wait task: %w", err)
	}
	for _, sh := range p.shifts {
		t0 := time.Now()
		if !sh.outOnly {
			if err := sh.shift.In(sh.root); err != nil {
				return res, err
			}
			sandbox.Trace(ctx, "userns.shift-in", t0, "id", s.ID)
		}
		defer func() {
			t0 := time.Now()
			if serr := sh.shift.Out(sh.root); serr != nil && err == nil {
				err = serr
			}
			sandbox.Trace(ctx, "userns.shift-out", t0, "id", s.ID)
		}()
	}
	res.Started = time.Now()
	if err := task.Start(ctx); err != nil {
		return res, fmt.Errorf("start task: %w", err)
	}
	sandbox.Trace(ctx, "task.start", res.Started, "id", s.ID)

	var timeout <-chan time.Time
	if s.Timeout > 0 {
		t := time.NewTimer(s.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	var status containerd.ExitStatus
	select {
	case status = <-exitc:
	case <-timeout:
		res.TimedOut = true
		status, err = e.kill(ctx, task, exitc)
	case <-ctx.Done():
		res.Cancelled = true
		status, err = e.kill(ctx, task, exitc)
	}
	res.Finished = time.Now()
	sandbox.Trace(ctx, "task.wait", res.Started, "id", s.ID)
	if err != nil {
		return res, err
	}
	code, _, serr := status.Result()
	if serr != nil {
		return res, fmt.Errorf("task exit status: %w", serr)
	}
	res.ExitCode = int(code)
	if p.spec.Linux != nil && p.spec.Linux.CgroupsPath != "" {
		res.OOMKilled = oomKilled(p.spec.Linux.CgroupsPath)
	}
	// The step's output must be complete when Start returns; the rest of
	// the teardown can finish in the background.
	if waitIO(task.IO(), 10*time.Second) && !res.Cancelled {
		async = true
	}
	return res, nil
}

// waitIO waits until the task's output has been copied, bounded.
func waitIO(io cio.IO, d time.Duration) bool {
	if io == nil {
		return true
	}
	done := make(chan struct{})
	go func() { io.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// teardown is a stack of cleanup functions, run last-in first-out with a
// context of their own, so a cancelled run still removes what it created.
type teardown struct{ fns []func(context.Context) error }

func (t *teardown) push(fn func(context.Context) error) { t.fns = append(t.fns, fn) }

func (t *teardown) run(ctx context.Context) error {
	tctx, cancel := teardownContext(ctx)
	defer cancel()
	var errs []error
	for i := len(t.fns) - 1; i >= 0; i-- {
		if err := t.fns[i](tctx); err != nil {
			errs = append(errs, err)
		}
	}
	t.fns = nil
	return errors.Join(errs...)
}

// kill stops every process of the task and waits for the exit, bounded so
// that a wedged shim becomes an infrastructure error instead of a hang.
func (e *Executor) kill(ctx context.Context, task containerd.Task, exitc <-chan containerd.ExitStatus) (containerd.ExitStatus, error) {
	tctx, cancel := teardownContext(ctx)
	defer cancel()
	if err := task.Kill(tctx, syscall.SIGKILL, containerd.WithKillAll); err != nil && !errdefs.IsNotFound(err) {
		return containerd.ExitStatus{}, fmt.Errorf("kill task: %w", err)
	}
	select {
	case st := <-exitc:
		return st, nil
	case <-tctx.Done():
		return containerd.ExitStatus{}, errors.New("task did not exit within 30s of SIGKILL")
	}
}

func teardownContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), teardownTimeout)
}

func (e *Executor) labels(s sandbox.Spec) map[string]string {
	l := map[string]string{sandbox.LabelManaged: "true"}
	if e.runID != "" {
		l[sandbox.LabelRun] = e.runID
	}
	for k, v := range s.Labels {
		l[k] = v
	}
	return l
}

// oomKilled reads the kernel's OOM-kill counter of the step's memory
// cgroup, which still exists between the task's exit and its deletion.
func oomKilled(cgroupsPath string) bool {
	var path, key string
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		path, key = filepath.Join("/sys/fs/cgroup", cgroupsPath, "memory.events"), "oom_kill"
	} else {
		path, key = filepath.Join("/sys/fs/cgroup/memory", cgroupsPath, "memory.oom_control"), "oom_kill"
	}
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n > 0
		}
	}
	return false
}
