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
	"sync"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/hashicorp/go-hclog"

	"github.com/cleanroom-ci/cleanroom/internal/toolcache"
	"github.com/cleanroom-ci/cleanroom/sandbox"
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

// WithLogger sets the logger.
func WithLogger(l hclog.Logger) Option { return func(o *options) { o.log = l } }

// New connects to containerd (starting a private daemon when none answers
// and no address was given), checks it and reaps residue of dead runs.
func New(ctx context.Context, opts ...Option) (*Executor, error) {
	o := options{namespace: DefaultNamespace, stateDir: "/run/cleanroom", log: hclog.NewNullLogger()}
	for _, opt := range opts {
		opt(&o)
	}
	silenceClientLogs()
	client, daemon, err := connect(ctx, o.address, o.explicit, o.stateDir, o.log)
	if err != nil {
		return nil, err
	}
	e := &Executor{
		client: client, daemon: daemon, ns: o.namespace, log: o.log,
		stateDir: o.stateDir, locksDir: o.locksDir, runID: o.runID,
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

// Client exposes the containerd client for the image commands.
func (e *Executor) Client() *containerd.Client { return e.client }

// Info reports versions and the hardening every step gets.
func (e *Executor) Info(ctx context.Context) (sandbox.Info, error) {
	v, err := e.client.Version(e.nsctx(ctx))
	if err != nil {
		return sandbox.Info{}, err
	}
	return sandbox.Info{
		Backend: "containerd",
		Versions: map[string]string{
			"containerd": v.Version,
			"runc":       runcVersion(filepath.Join(e.stateDir, "toolcache")),
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

// runcVersion execs `runc --version` once per runc binary, not once per
// start: the answer is kept under the state directory, keyed by the
// binary's path, size and modification time (internal/toolcache).
var runcVersion = func(cacheDir string) string {
	b, err := toolcache.Output(cacheDir, "runc", []string{"--version"})
	if err != nil {
		return "unknown"
	}
	var v string
	fmt.Sscanf(string(b), "runc version %s", &v)
	if v == "" {
		return "unknown"
	}
	return v
}

// fifoDir holds the named pipes that carry a task's stdout and stderr.
func (e *Executor) fifoDir() string {
	d := filepath.Join(e.stateDir, "fifo")
	os.MkdirAll(d, 0o700)
	return d
}
