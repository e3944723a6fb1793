// Package ctrexec runs build steps in containerd sandboxes (runc), each in a
// fresh snapshot with a hardened OCI spec. It is the containerd
// implementation of sandbox.Executor. The package is not called
// "containerd" so that it never clashes with the client's usual import alias.
//
// Only the services a containerd 1.6 daemon has are used (containers, tasks,
// snapshots, content, images, leases): image pull and import run client-side,
// and the transfer, sandbox and introspection PluginInfo APIs are avoided.
package ctrexec

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/hashicorp/go-hclog"

	"github.com/cleanroom-ci/cleanroom/sandbox"
	"github.com/cleanroom-ci/cleanroom/sandbox/userns"
)

const (
	// DefaultNamespace keeps cleanroom's images and containers apart from
	// those of other containerd users (Docker's "moby", Kubernetes' "k8s.io").
	DefaultNamespace = "cleanroom"
	snapshotter      = "overlayfs"
	runtimeName      = "io.containerd.runc.v2"
)

// Executor is a sandbox.Executor backed by containerd.
type Executor struct {
	client    *containerd.Client
	daemon    *privateDaemon
	ns        string
	log       hclog.Logger
	stateDir  string
	locksDir  string
	runID     string
	shims     shimGroup  // the run's tasks share one shim (run.go)
	imageMu   sync.Mutex // serialises import/pull of the same image
	closeOnce sync.Once

	// Isolation (isolation.go): user namespaces, the default and forced
	// runtime, the id ranges.
	userns       bool
	pool         userns.Pool
	subIDLocks   string
	runtime      string
	forceRuntime string
	remapMu      sync.Mutex
	runscOnce    sync.Once
	runscPath    string
	runscErr     error

	pending     sync.WaitGroup // background teardowns of finished steps
	teardownMu  sync.Mutex
	teardownErr []error
}

var _ sandbox.Executor = (*Executor)(nil)

type options struct {
	address   string
	explicit  bool
	namespace string
	stateDir  string
	locksDir  string
	runID     string
	log       hclog.Logger

	noUserNS     bool
	runtime      string
	forceRuntime string
	subIDLocks   string
	subIDRoot    string
}

// Option configures New.
type Option func(*options)

// WithAddress selects an existing daemon's socket. With it, a daemon that
// does not answer is an error instead of a reason to start a private one.
func WithAddress(addr string) Option {
	return func(o *options) { o.address, o.explicit = addr, addr != "" }
}

// WithNamespace sets the containerd namespace (default "cleanroom").
func WithNamespace(ns string) Option { return func(o *options) { o.namespace = ns } }

// WithStateDir is where a private daemon keeps its root, state and socket.
func WithStateDir(dir string) Option { return func(o *options) { o.stateDir = dir } }

// WithRun ties the executor to a run: its containers carry runID, and on
// start it reaps the containers, snapshots and leases of every run whose lock
// in locksDir (see internal/runlock) is no longer held.
func WithRun(locksDir, runID string) Option {
	return func(o *options) { o.locksDir, o.runID = locksDir, runID }
}

// WithoutUserNamespaces runs runc and crun steps as host root with the
// step's capabilities, as before user namespaces were the default: for
// kernels or filesystems where they cannot work. It weakens isolation.
func WithoutUserNamespaces() Option { return func(o *options) { o.noUserNS = true } }

// WithRuntime sets the default runtime (runc, crun, runsc) of steps that
// do not choose one; WithForcedRuntime overrides every step's choice (an
// administrator's policy).
func WithRuntime(rt string) Option       { return func(o *options) { o.runtime = rt } }
func WithForcedRuntime(rt string) Option { return func(o *options) { o.forceRuntime = rt } }

// WithSubIDLocks sets the host-wide directory of id-range locks (default
// DefaultSubIDLocks) and the directory holding subuid and subgid (default
// /etc).
func WithSubIDLocks(lockDir, etc string) Option {
	return func(o *options) { o.subIDLocks, o.subIDRoot = lockDir, etc }
}

// WithLogger sets the logger.
func WithLogger(l hclog.Logger) Option { return func(o *options) { o.log = l } }

// New connects to containerd (starting a private daemon when none answers
// and no address was given), checks it and reaps residue of dead runs.
func New(ctx context.Context, opts ...Option) (*Executor, error) {
	o := options{namespace: DefaultNamespace, stateDir: "/run/cleanroom", log: hclog.NewNullLogger(),
		runtime: RuntimeRunc, subIDLocks: DefaultSubIDLocks, subIDRoot: "/etc"}
	for _, opt := range opts {
		opt(&o)
	}
	for _, rt := range []string{o.runtime, o.forceRuntime} {
		if rt != "" && !ValidRuntime(rt) {
			return nil, fmt.Errorf("unknown runtime %q (want one of %s)", rt, strings.Join(Runtimes, ", "))
		}
	}
	pool, err := userns.LoadPool(o.subIDRoot)
	if err != nil && !o.noUserNS {
		return nil, err
	}
	silenceClientLogs()
	client, daemon, err := connect(ctx, o.address, o.explicit, o.stateDir, o.log)
	if err != nil {
		return nil, err
	}
	e := &Executor{
		client: client, daemon: daemon, ns: o.namespace, log: o.log,
		stateDir: o.stateDir, locksDir: o.locksDir, runID: o.runID,
		userns: !o.noUserNS, pool: pool, subIDLocks: o.subIDLocks,
		runtime: o.runtime, forceRuntime: o.forceRuntime,
	}
	v, err := client.Version(e.nsctx(ctx))
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("containerd does not answer its version request: %w", err)
	}
	e.log.Debug("connected to containerd", "version", v.Version, "revision", v.Revision)
	if o.locksDir != "" {
		if err := e.reap(ctx); err != nil {
			e.log.Warn("could not reap residue of earlier runs", "error", err)
		}
	}
	return e, nil
}

func (e *Executor) nsctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, e.ns)
}

// Info reports versions and the hardening every step gets.
func (e *Executor) Info(ctx context.Context) (sandbox.Info, error) {
	v, err := e.client.Version(e.nsctx(ctx))
	if err != nil {
		return sandbox.Info{}, err
	}
	rt := e.runtimeOf("")
	return sandbox.Info{
		Backend:        "containerd",
		Runtime:        rt,
		RuntimeVersion: e.runtimeVersion(rt),
		UserNamespace:  e.userns && runtimeUsesUserNS(rt),
		Versions: map[string]string{
			"containerd": v.Version,
			"runc":       e.runtimeVersion(RuntimeRunc),
		},
		Capabilities:   append([]string(nil), Capabilities...),
		SeccompDigest:  seccompDigest(),
		NoNewPrivs:     true,
		ReadonlyRootfs: true,
	}, nil
}

// Close waits for the background teardown of finished steps, disconnects,
// and stops a private daemon if this was its last user. A teardown that
// failed is reported here: its residue is reaped by the next start.
func (e *Executor) Close() error {
	var err error
	e.closeOnce.Do(func() {
		e.pending.Wait()
		// Empty once every step's teardown detached its mounts; a mount
		// left there keeps it, for the reaper.
		os.Remove(e.idmapRunDir())
		e.teardownMu.Lock()
		errs := append(e.teardownErr, e.client.Close())
		e.teardownMu.Unlock()
		e.daemon.stop()
		err = errors.Join(errs...)
	})
	return err
}

func (e *Executor) noteTeardownError(id string, err error) {
	e.log.Error("teardown failed; the next start reaps what is left", "id", id, "error", err)
	e.teardownMu.Lock()
	e.teardownErr = append(e.teardownErr, fmt.Errorf("%s: %w", id, err))
	e.teardownMu.Unlock()
}

// fifoDir holds the named pipes that carry a task's stdout and stderr.
func (e *Executor) fifoDir() string {
	d := filepath.Join(e.stateDir, "fifo")
	os.MkdirAll(d, 0o700)
	return d
}
