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
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/cleanroom-ci/cleanroom/sandbox"
)

// teardownTimeout bounds cleanup, which runs on a context of its own so
// that a cancelled run still removes everything it created.
const teardownTimeout = 30 * time.Second

// createTimeout bounds Prepare's create calls, which do not end with the
// caller's context (see Prepare). A variable: a test shortens it.
var createTimeout = 2 * time.Minute

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
//
// A cancelled ctx never leaves a sandbox behind. The create calls run on
// a context detached from ctx (bounded by createTimeout): a call cancelled
// while the daemon carries it out returns an error although the container
// or task exists, and Prepare would lose track of it. Cancellation is
// checked between the calls instead; when ctx ends, Prepare removes what
// it made and returns ctx's cause.
func (e *Executor) Prepare(ctx context.Context, s sandbox.Spec, stdout, stderr io.Writer) (_ sandbox.Prepared, err error) {
	caller := e.nsctx(ctx)
	// What comes before the image's id-shifted copy has a bound of its
	// own; the creates' bound starts after the copy.
	pctx, cancelPre := context.WithTimeout(context.WithoutCancel(caller), createTimeout)
	defer cancelPre()
	cancelled := func() error {
		if caller.Err() != nil {
			return fmt.Errorf("prepare sandbox %s: %w", s.ID, context.Cause(caller))
		}
		return nil
	}
	if err := cancelled(); err != nil {
		return nil, err
	}
	img, err := e.client.GetImage(pctx, s.Image.Name)
	if err != nil {
		return nil, fmt.Errorf("image %s is not available locally: %w", s.Image.Ref, err)
	}
	labels := e.labels(s)
	p := &prepared{e: e, s: s, ctx: context.WithoutCancel(caller)}
	// On failure, remove what was created before returning.
	defer func() {
		if err != nil {
			if terr := p.td.run(p.ctx); terr != nil {
				err = errors.Join(err, terr)
			}
		}
	}()

	rt := e.runtimeOf(s.Runtime)
	rtOpts, err := e.runtimeOptions(rt)
	if err != nil {
		return nil, err
	}
	nw, err := e.stepNetwork(pctx, p, rt)
	if err != nil {
		return nil, err
	}
	var parent string
	if nw.slot != nil {
		// Made once per image and range, it can take minutes: it has
		// a bound of its own (remapTimeout).
		if parent, err = e.remappedParent(caller, img, nw.slot.Range); err != nil {
			if cerr := cancelled(); cerr != nil {
				return nil, cerr
			}
			return nil, err
		}
	}
	if err := cancelled(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(caller), createTimeout)
	defer cancel()

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
	// Deleting the container removes its snapshot; this removes one whose
	// container was never created (NewContainer failed, or a cancel came
	// in between, after making it), which the lease's release would leave
	// to the daemon's next garbage collection.
	p.td.push(func(tctx context.Context) error {
		if serr := e.client.SnapshotService(snapshotter).Remove(tctx, s.ID); serr != nil && !errdefs.IsNotFound(serr) {
			return fmt.Errorf("remove snapshot: %w", serr)
		}
		return nil
	})
	if err := cancelled(); err != nil {
		return nil, err
	}

	snap := containerd.WithNewSnapshot(s.ID, img, snapshots.WithLabels(labels))
	if nw.slot != nil {
		t0 := time.Now()
		sn := e.client.SnapshotService(snapshotter)
		// Not cancelled half-way: a snapshot made by a request whose
		// answer was lost to a cancel would have no teardown.
		if _, err := sn.Prepare(lctx, s.ID, parent, snapshots.WithLabels(labels)); err != nil {
			return nil, fmt.Errorf("prepare snapshot: %w", err)
		}
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
	if rtOpts == nil {
		rtOpts = benchRuntimeOptions()
	}
	if err := cancelled(); err != nil {
		return nil, err
	}

	t0 := time.Now()
	p.container, err = e.client.NewContainer(lctx, s.ID,
		containerd.WithContainerLabels(labels),
		containerd.WithImageName(img.Name()),
		containerd.WithSnapshotter(snapshotter),
		snap,
		containerd.WithRuntime(runtimeName, rtOpts),
		containerd.WithNewSpec(append(specOpts(img, s, nw, rt), e.withShimGroup())...),
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
	if err := cancelled(); err != nil {
		return nil, err
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
	if err := cancelled(); err != nil {
		return nil, err
	}
	return p, nil
}

// createTask starts the shim and creates the task (runc create): the
// step's process waits in its namespaces until Start.
func (p *prepared) createTask(ctx context.Context) error {
	s, e := p.s, p.e
	t0 := time.Now()
	// Not ended by a cancel: a task the daemon made while its answer was
	// lost would have no teardown (the cancel is noticed after).
	e.shims.creating()
	task, err := p.container.NewTask(context.WithoutCancel(ctx), cio.NewCreator(cio.WithStreams(nil, p.stdout, p.stderr), cio.WithFIFODir(e.fifoDir())))
	e.shims.created(err == nil)
	if err != nil {
		return fmt.Errorf("create task: %w", err)
	}
	p.task = task
	sandbox.Trace(ctx, "task.create", t0, "id", s.ID)
	p.td.push(func(tctx context.Context) error {
		t0 := time.Now()
		defer sandbox.Trace(ctx, "task.delete", t0, "id", s.ID)
		done := e.shims.deleting()
		defer done()
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
	// Out is registered before In runs: an In that fails half-way is
	// undone too. It walks the trees only once the step's processes are
	// known to be gone (stepGone).
	undo, err := p.shiftIn(ctx)
	stepGone := true // nothing of the step runs before task.Start
	defer func() {
		if serr := undo(stepGone); serr != nil && err == nil {
			err = serr
		}
	}()
	if err != nil {
		return res, err
	}
	res.Started = time.Now()
	stepGone = false
	if err := task.Start(ctx); err != nil {
		// Whether the step's process started is not known: it is gone
		// once killed and its exit seen.
		if _, kerr := e.kill(ctx, task, exitc); kerr == nil {
			stepGone = true
		}
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
		return res, err // the kill failed: the step may still run
	}
	// The init's exit is seen, and it had the step's PID namespace:
	// every other process of the step is gone with it.
	stepGone = true
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

const benchOCIBinaryEnv = "CLEANROOM_BENCH_OCI_BINARY"

// benchRuntimeOptions lets the benchmarks (bench/run.sh) measure another
// OCI runtime binary (crun) under the same runc shim, through its
// BinaryName option: CLEANROOM_BENCH_OCI_BINARY names it. It is a
// measurement knob, not a configuration: provenance still reports runc.
func benchRuntimeOptions() *runc.Options {
	if bin := os.Getenv(benchOCIBinaryEnv); bin != "" {
		return &runc.Options{BinaryName: bin}
	}
	return nil
}

// shimGroupAnnotation makes the runc shim serve every container that
// carries the same value from one shim process (containerd's runc v2 shim
// reads it from the spec when it starts): the steps of one run would
// share a shim instead of starting one at every task create and stopping
// it at every delete. The shim runs on the host, outside every sandbox, so
// sharing it would give one step no reach into another. It is off unless
// CLEANROOM_BENCH_SHIM_GROUP is set: containerd marks grouping
// experimental, and the shim serialises a create against the other
// containers' calls, which the benchmarks measure against the gain.
const shimGroupAnnotation = "io.containerd.runc.v2.group"

func (e *Executor) withShimGroup() oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, sp *oci.Spec) error {
		if e.runID == "" || os.Getenv("CLEANROOM_BENCH_SHIM_GROUP") == "" {
			return nil
		}
		if sp.Annotations == nil {
			sp.Annotations = map[string]string{}
		}
		sp.Annotations[shimGroupAnnotation] = "cleanroom-" + e.runID
		return nil
	}
}

// shimGroup orders task creates against the delete of a group's last
// task. Deleting the last task shuts the shared shim down, and a create
// racing with that shutdown would be handed the address of a shim that is
// going away ("failed to start shim: dial ... no such file"). Creates and
// a last delete therefore never overlap; other deletes run freely.
type shimGroup struct {
	mu   sync.Mutex // held across a create, and across a last delete
	cmu  sync.Mutex // guards live
	live int        // tasks created and not yet deleted
}

func (g *shimGroup) creating() { g.mu.Lock() }

func (g *shimGroup) created(ok bool) {
	if ok {
		g.cmu.Lock()
		g.live++
		g.cmu.Unlock()
	}
	g.mu.Unlock()
}

// deleting registers a delete and returns what to call when it is done.
func (g *shimGroup) deleting() (done func()) {
	g.cmu.Lock()
	g.live--
	last := g.live <= 0
	g.cmu.Unlock()
	if !last {
		return func() {}
	}
	g.mu.Lock()
	return g.mu.Unlock
}
