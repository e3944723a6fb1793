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
	"net"
	"syscall"
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

// Network is one step's network: a namespace with loopback only, where
// nothing listens but what the runner opens in it (the egress proxy).
type Network interface {
	// Listen opens a listener inside the network; the socket keeps the
	// network it was made in, so it can be served from any goroutine.
	Listen(network, address string) (net.Listener, error)
	// Dial connects from inside the network (to a listener opened there
	// with Listen, for example).
	Dial(ctx context.Context, network, address string) (net.Conn, error)
	// Close removes the network. It is idempotent and safe after the
	// sandbox that used it is gone.
	Close() error
}

// NetworkProvider gives each step its network. It is the executor's
// choice because the network's shape depends on the sandbox: a network
// namespace owned by the step's user namespace for runc and crun, one
// owned by the host for gVisor (whose own network stack is switched off
// and uses it as the host network). Spec.Network is then a value the same
// executor made.
type NetworkProvider interface {
	NewNetwork(ctx context.Context, spec NetworkSpec) (Network, error)
}

// NetworkSpec says which step a network is for.
type NetworkSpec struct {
	// ID is the step's sandbox ID (Spec.ID); the network is named after it
	// so that a later start can reap what a crashed run left.
	ID string
	// Runtime is the step's runtime (Spec.Runtime).
	Runtime string
}

// RuntimeResolver is implemented by executors with a choice of OCI
// runtimes.
type RuntimeResolver interface {
	// ResolveRuntime returns the runtime that a step asking for rt (""
	// for the default) runs under, an administrator's forced one winning,
	// and its version; an error when it cannot run on this host.
	ResolveRuntime(rt string) (name, version string, err error)
}

// Puller is implemented by executors that can pull a registry image with
// credentials (the GitLab driver's job images).
type Puller interface {
	// Pull asks the registry every time, with the credentials auth gives
	// for a host (nil: anonymous), and returns the image under a name
	// pinned to its digest.
	Pull(ctx context.Context, ref string, auth func(host string) (user, secret string, err error)) (Image, error)
}

// Signaller is implemented by executors that can signal a running sandbox.
type Signaller interface {
	// Signal sends sig to every process of the running sandbox id; it is
	// an error when there is none.
	Signal(ctx context.Context, id string, sig syscall.Signal) error
}

// ImageFileReader is implemented by executors that can read files of an
// image without running it (lockfile and toolchain inspection).
type ImageFileReader interface {
	// ReadImageFiles returns the files of paths that exist, each read up
	// to max bytes, resolved inside the image's root.
	ReadImageFiles(ctx context.Context, img Image, paths []string, max int64) (map[string][]byte, error)
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
	// Args is the process argv (e.g. /bin/sh -e -c SCRIPT). Empty keeps
	// the image's entrypoint, followed by Command if set, else by the
	// image's cmd (a service container).
	Args    []string
	Command []string
	// Env is applied over the image config's environment (toolchain images
	// set PATH, GOPATH, JAVA_HOME …); a variable set in both takes its
	// value from Env. Nothing of the runner's own environment is added.
	Env []string
	// Cwd is the working directory inside the sandbox; empty keeps the
	// image's (or /).
	Cwd string
	// Mounts are bind mounts from the host.
	Mounts []Mount
	// ImageVolumes mounts a fresh tmpfs, bounded like /tmp, on every
	// volume the image's config declares: the root filesystem is
	// read-only, and a database image keeps its data in such a volume.
	ImageVolumes bool
	// Network is the step's network, made by the executor's
	// NetworkProvider. Nil means a fresh, private namespace with loopback
	// only.
	Network Network
	// Runtime selects the OCI runtime ("runc", "crun", "runsc"); empty is
	// the executor's default.
	Runtime string
	// Limits are the cgroup limits.
	Limits Limits
	// Timeout kills the step after this long; zero means no timeout.
	Timeout time.Duration
	// Labels are attached to the container for bookkeeping and reaping.
	Labels map[string]string
	// Vary changes what a reproducible build must not depend on (see
	// Variation); the zero value changes nothing.
	Vary Variation
}

// Variation is how `cleanroom rebuild` runs a step differently from the
// reference build, to show that the build does not depend on it. Each
// field's zero value leaves the sandbox as an ordinary run has it.
type Variation struct {
	// Hostname replaces the sandbox's host name ("cleanroom").
	Hostname string
	// UID and GID, when UID is non-zero, run the step's process as that
	// user instead of root, with the same capabilities (so it writes the
	// workspace as root would; in a user namespace, as the namespace's
	// uid UID).
	UID, GID uint32
	// Umask, when set, is the process's umask instead of the runtime's 022.
	Umask *uint32
	// CPUSet pins the step to these CPUs ("0"): what nproc and
	// sched_getaffinity report.
	CPUSet string
	// ReverseEnv hands the process its environment in reverse order.
	ReverseEnv bool
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
	Backend string `json:"backend"`
	// Runtime is the default OCI runtime and RuntimeVersion its version;
	// a step that chose another has it in its own record.
	Runtime        string `json:"runtime,omitempty"`
	RuntimeVersion string `json:"runtimeVersion,omitempty"`
	// UserNamespace tells whether steps run in user namespaces of their
	// own (container root an unprivileged host uid).
	UserNamespace  bool              `json:"userNamespace"`
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
	// LabelService marks a service container (its alias); it carries the
	// run's and the step's labels too, so it is reaped with them.
	LabelService = "dev.cleanroom.service"
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
