// Package sandbox defines the seam between the runner and whatever runs a
// build step in isolation. The runner speaks only these types; the containerd
// implementation lives in sandbox/containerd, so the engine can be tested and
// reasoned about without a daemon and a second backend (gVisor, a VM) can be
// added without touching the runner.
package sandbox

import (
	"context"
	"fmt"
	"io"
	"time"
)

// Executor runs build steps in fresh sandboxes.
//
// Contract:
//   - Resolve and Run are safe for concurrent use.
//   - Run is blocking. A non-zero exit, a timeout or an OOM kill is reported
//     in the Result with a nil error; an error means the sandbox itself could
//     not be created, run or torn down (an infrastructure failure).
//   - Run removes everything it created (container, task, snapshot, lease)
//     before returning, whatever the outcome, including when ctx is cancelled.
//   - Close releases the executor's own resources; it does not need to wait
//     for Runs in flight to finish beyond what they already guarantee.
type Executor interface {
	// Resolve makes the image available locally and returns its identity.
	Resolve(ctx context.Context, ref string) (Image, error)
	// Run runs one step to completion.
	Run(ctx context.Context, spec Spec, stdout, stderr io.Writer) (Result, error)
	// Info describes the backend for provenance (versions, applied hardening).
	Info(ctx context.Context) (Info, error)
	Close() error
}

// Preparer is implemented by executors that can create a sandbox ahead of
// running it, so that a step's start-up (for containerd: the shim, runc
// create) overlaps the step before it. Run is Prepare then Start.
//
// Contract: Prepare returns either a Prepared or an error, never both,
// and on error nothing it created is left. Cancelling ctx while Prepare
// runs (SIGINT while the next step is prepared ahead) gives an error
// wrapping ctx's cause and leaves nothing either: the implementation must
// not lose what a create call cancelled in flight made. The Prepared's
// teardown (Start's or Discard's) does not depend on ctx: it works after
// ctx has ended.
type Preparer interface {
	Prepare(ctx context.Context, spec Spec, stdout, stderr io.Writer) (Prepared, error)
}

// Prepared is a created sandbox whose process has not started. Exactly
// one of Start or Discard must be called; either removes the sandbox
// (Start as Run does, Discard at once).
type Prepared interface {
	// Start runs the sandbox to completion, as Executor.Run; the step's
	// Timeout counts from here. A ctx already cancelled gives a Result
	// with Cancelled set and nothing run.
	Start(ctx context.Context) (Result, error)
	Discard() error
}

// Image is a resolved, locally available image.
type Image struct {
	// Ref is the reference as the pipeline wrote it.
	Ref string
	// Name is the name under which the image is stored locally.
	Name string
	// Digest is the manifest (or index) digest, "sha256:…".
	Digest string
}

// Spec is everything needed to run one step.
type Spec struct {
	// ID names the sandbox; unique per run and step, safe for containerd
	// identifiers ([A-Za-z0-9_.-]).
	ID string
	// Image is the resolved image to run.
	Image Image
	// Args is the process argv (e.g. /bin/sh -e -c SCRIPT).
	Args []string
	// Env is applied over the image config's environment (toolchain images
	// set PATH, GOPATH, JAVA_HOME …); a variable set in both takes its
	// value from Env. Nothing of the runner's own environment is added.
	Env []string
	// Cwd is the working directory inside the sandbox.
	Cwd string
	// Mounts are bind mounts from the host.
	Mounts []Mount
	// NetNSPath is the network namespace to join. Empty means a fresh,
	// private namespace with loopback only.
	NetNSPath string
	// Limits are the cgroup limits.
	Limits Limits
	// Timeout kills the step after this long; zero means no timeout.
	Timeout time.Duration
	// Labels are attached to the container for bookkeeping and reaping.
	Labels map[string]string
}

// Mount is a bind mount from the host into the sandbox.
type Mount struct {
	Source      string
	Destination string
	ReadOnly    bool
}

// Limits are resource limits for one step.
type Limits struct {
	MemoryBytes int64
	CPUs        float64
	Pids        int64
	// TmpBytes bounds the size of the writable /tmp tmpfs.
	TmpBytes int64
}

// Result is how a step ended.
type Result struct {
	ExitCode int
	TimedOut bool
	// OOMKilled is set when the kernel killed a process of the step for
	// exceeding its memory limit.
	OOMKilled bool
	// Cancelled is set when ctx was cancelled (SIGINT/SIGTERM to the runner).
	Cancelled bool
	Started   time.Time
	Finished  time.Time
}

// Failed reports whether the step did not succeed. An OOM kill of some
// process in the step is a failure only if the step then exits non-zero:
// a build tool may survive (and retry after) a killed child.
func (r Result) Failed() bool {
	return r.ExitCode != 0 || r.TimedOut || r.Cancelled
}

// Reason is a short human description of the outcome.
func (r Result) Reason() string {
	switch {
	case r.Cancelled:
		return "cancelled"
	case r.TimedOut:
		return "timed out"
	case r.OOMKilled && r.ExitCode != 0:
		return "killed: out of memory"
	case r.ExitCode != 0:
		return fmt.Sprintf("exit status %d", r.ExitCode)
	default:
		return "ok"
	}
}

// Info describes the backend and the hardening it applies, for provenance.
type Info struct {
	Backend        string            `json:"backend"`
	Versions       map[string]string `json:"versions"`
	Capabilities   []string          `json:"capabilities"`
	SeccompDigest  string            `json:"seccompProfileDigest"`
	NoNewPrivs     bool              `json:"noNewPrivileges"`
	ReadonlyRootfs bool              `json:"readonlyRootfs"`
}

// Labels used on everything a run creates, so a later start can find and
// reap what a crashed run left behind.
const (
	LabelManaged = "dev.cleanroom.managed"
	LabelRun     = "dev.cleanroom.run"
	LabelStep    = "dev.cleanroom.step"
	LabelPID     = "dev.cleanroom.pid"
)

// TraceFunc receives timed spans (for --trace and benchmarks).
type TraceFunc func(span string, start, end time.Time, attrs ...any)

type traceKey struct{}

// WithTrace returns a context whose sandbox operations report spans to fn.
func WithTrace(ctx context.Context, fn TraceFunc) context.Context {
	return context.WithValue(ctx, traceKey{}, fn)
}

// Trace reports a span ending now to the context's TraceFunc, if any.
func Trace(ctx context.Context, span string, start time.Time, attrs ...any) {
	if fn, ok := ctx.Value(traceKey{}).(TraceFunc); ok && fn != nil {
		fn(span, start, time.Now(), attrs...)
	}
}
