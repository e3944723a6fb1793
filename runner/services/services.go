// Package services runs a step's service containers (a database, a cache,
// a mock server) beside it, as the containers of a Kubernetes pod: each in
// its own sandbox with the same hardened spec as a step, all joined to the
// step's loopback-only network namespace, so the step reaches them at
// 127.0.0.1:PORT (and by alias, through the hosts file the runner writes)
// and nothing outside the namespace reaches them at all.
//
// Start starts them and waits until each is ready; Stop kills and removes
// them. Everything they create carries the run's and the step's labels, so
// a runner that dies with them running has them reaped by the next start,
// like its steps.
package services

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/cleanroom-ci/cleanroom/sandbox"
)

// Service is one service to run, resolved.
type Service struct {
	Alias string
	Image sandbox.Image
	// Args replaces the image's entrypoint and cmd when set; otherwise
	// Command (when non-nil) replaces the cmd (see sandbox.Spec).
	Args    []string
	Command []string
	Env     []string
	Ready   Readiness
	Limits  sandbox.Limits
}

// Readiness says when a service can take requests.
type Readiness struct {
	// Port is a TCP port on 127.0.0.1 that must accept a connection.
	Port int
	// Command must exit 0; it runs in a fresh sandbox of the service's
	// image, in the step's network namespace.
	Command []string
	Timeout time.Duration
}

// Config is what the services of one step share.
type Config struct {
	Executor sandbox.Executor
	// Step names the step; IDPrefix starts every container id (the
	// step's, so that the reaper finds them).
	Step     string
	IDPrefix string
	// Network is the step's network, which every service joins (for
	// runc and crun with the step's user namespace too: a pod's); Runtime
	// is the step's runtime, which the network was made for. Dial
	// connects inside the network.
	Network sandbox.Network
	Runtime string
	Dial    func(ctx context.Context, address string) (net.Conn, error)
	// Mounts are given to every service (the hosts file).
	Mounts []sandbox.Mount
	// LogDir receives <alias>.log per service; LogName is how messages
	// name that directory (relative to the outputs).
	LogDir  string
	LogName string
	Logger  hclog.Logger
}

// Group is the running services of one step.
type Group struct {
	cfg  Config
	svcs []*running
}

type running struct {
	svc     Service
	logPath string
	log     *os.File
	out     *lockedWriter
	cancel  context.CancelFunc
	done    chan struct{}
	res     sandbox.Result
	err     error
	started time.Time
}

// NotReadyError is a service that did not become ready in time, or
// exited first. It carries the end of the service's log.
type NotReadyError struct {
	Step, Alias string
	Reason      string
	LogName     string
	LogTail     string
}

func (e *NotReadyError) Error() string {
	msg := fmt.Sprintf("step %q: service %q is not ready: %s", e.Step, e.Alias, e.Reason)
	if e.LogTail == "" {
		return msg + "; its log (" + e.LogName + ") is empty"
	}
	return msg + "; last lines of its log (" + e.LogName + "):\n" + e.LogTail
}

// ErrCancelled is returned by Start when ctx ends while waiting.
var ErrCancelled = errors.New("cancelled while starting services")

// Start starts every service and waits until all are ready. On error
// every service already started is stopped and removed again.
func Start(ctx context.Context, cfg Config, svcs []Service) (_ *Group, err error) {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	g := &Group{cfg: cfg}
	defer func() {
		if err != nil {
			err = errors.Join(err, g.Stop())
		}
	}()
	if err := os.MkdirAll(cfg.LogDir, 0o700); err != nil {
		return g, err
	}
	for _, s := range svcs {
		r, err := g.start(ctx, s)
		if err != nil {
			return g, fmt.Errorf("step %q: service %q: %w", cfg.Step, s.Alias, err)
		}
		g.svcs = append(g.svcs, r)
	}
	for _, r := range g.svcs {
		if err := g.wait(ctx, r); err != nil {
			return g, err
		}
		cfg.Logger.Info("service ready", "service", r.svc.Alias, "after", time.Since(r.started).Round(time.Millisecond))
	}
	return g, nil
}

// maxIDLength is containerd's limit on container and snapshot ids.
const maxIDLength = 76

// id names a service's sandbox: the step's id, "-svc-" and the alias (and
// suffix); when that is too long for containerd, the step's id is cut
// (its start, "cr-<run>-<index>", stays unique) and the alias replaced by
// the service's index. Labels still carry the alias.
func (g *Group) id(s Service, suffix string) string {
	full := g.cfg.IDPrefix + "-svc-" + s.Alias + suffix
	if len(full) <= maxIDLength {
		return full
	}
	i := 0
	for i < len(g.svcs) && g.svcs[i].svc.Alias != s.Alias {
		i++
	}
	tail := fmt.Sprintf("-svc%d%s", i, suffix)
	// containerd allows no repeated separators: none may end the cut.
	return strings.TrimRight(g.cfg.IDPrefix[:min(len(g.cfg.IDPrefix), maxIDLength-len(tail))], "-_.") + tail
}

func (g *Group) spec(s Service) sandbox.Spec {
	return sandbox.Spec{
		ID:      g.id(s, ""),
		Image:   s.Image,
		Args:    s.Args,
		Command: s.Command,
		Env:     s.Env,
		Mounts:  g.cfg.Mounts,
		// A database image keeps its data in a declared volume; the
		// root filesystem is read-only.
		ImageVolumes: true,
		Network:      g.cfg.Network,
		Runtime:      g.cfg.Runtime,
		Limits:       s.Limits,
		Labels:       map[string]string{sandbox.LabelStep: g.cfg.Step, sandbox.LabelService: s.Alias},
	}
}

func (g *Group) start(ctx context.Context, s Service) (*running, error) {
	r := &running{svc: s, logPath: filepath.Join(g.cfg.LogDir, s.Alias+".log"), done: make(chan struct{})}
	f, err := os.Create(r.logPath)
	if err != nil {
		return nil, err
	}
	r.log = f
	out := &lockedWriter{w: f}
	r.out = out
	spec := g.spec(s)
	var box sandbox.Prepared
	if pr, ok := g.cfg.Executor.(sandbox.Preparer); ok {
		if box, err = pr.Prepare(ctx, spec, out, out); err != nil {
			f.Close()
			return nil, fmt.Errorf("sandbox failure: %w", err)
		}
	}
	// The service lives until Stop cancels its context (or the run's
	// cancellation reaches it); Start then kills it and removes its
	// container, task and snapshot before returning.
	sctx, cancel := context.WithCancel(ctx)
	r.cancel = cancel
	r.started = time.Now()
	go func() {
		defer close(r.done)
		if box != nil {
			r.res, r.err = box.Start(sctx)
		} else {
			r.res, r.err = g.cfg.Executor.Run(sctx, spec, out, out)
		}
	}()
	g.cfg.Logger.Info("service starting", "service", s.Alias, "image", s.Image.Ref, "digest", s.Image.Digest)
	return r, nil
}

// Poll intervals: a port is cheap to try; a command costs a sandbox.
const (
	portInterval    = 100 * time.Millisecond
	commandInterval = time.Second
)

func (g *Group) wait(ctx context.Context, r *running) error {
	ready := r.svc.Ready
	if ready.Port == 0 && len(ready.Command) == 0 {
		return g.exited(r) // started is all that is asked
	}
	deadline := r.started.Add(ready.Timeout)
	reason := "no answer yet"
	probes := 0
	for {
		if err := g.exited(r); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ErrCancelled
		}
		ok, why := g.probe(ctx, r, &probes, deadline)
		if ok {
			return nil
		}
		reason = why
		interval := portInterval
		if ready.Port == 0 {
			interval = commandInterval
		}
		if time.Now().Add(interval).After(deadline) {
			return g.notReady(r, fmt.Sprintf("not ready within %s (%s)", ready.Timeout, reason))
		}
		select {
		case <-ctx.Done():
			return ErrCancelled
		case <-r.done:
		case <-time.After(interval):
		}
	}
}

// probe tries the port, then the command; it says why not.
func (g *Group) probe(ctx context.Context, r *running, probes *int, deadline time.Time) (bool, string) {
	ready := r.svc.Ready
	if ready.Port != 0 {
		addr := net.JoinHostPort("127.0.0.1", fmt.Sprint(ready.Port))
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		c, err := g.cfg.Dial(dctx, addr)
		cancel()
		if err != nil {
			return false, addr + " does not accept connections"
		}
		c.Close()
	}
	if len(ready.Command) == 0 {
		return true, ""
	}
	*probes++
	var out bytes.Buffer
	spec := g.spec(r.svc)
	spec.ID = g.id(r.svc, fmt.Sprintf("-ready%d", *probes))
	spec.Args, spec.Command = ready.Command, nil
	spec.Limits = sandbox.Limits{MemoryBytes: 256 << 20, CPUs: 1, Pids: 64}
	spec.Timeout = min(10*time.Second, max(time.Until(deadline), time.Second))
	spec.Labels = map[string]string{sandbox.LabelStep: g.cfg.Step, sandbox.LabelService: r.svc.Alias + ".ready"}
	w := &limitedBuffer{b: &out, max: 4096}
	res, err := g.cfg.Executor.Run(ctx, spec, w, w)
	fmt.Fprintf(r.out, "[ready: %s] %s", strings.Join(ready.Command, " "), out.String())
	if err != nil {
		return false, "the readiness command could not run: " + err.Error()
	}
	if res.Failed() {
		return false, fmt.Sprintf("%s: %s", strings.Join(ready.Command, " "), res.Reason())
	}
	return true, ""
}

// exited reports a service whose process has already ended.
func (g *Group) exited(r *running) error {
	select {
	case <-r.done:
	default:
		return nil
	}
	if r.err != nil {
		return g.notReady(r, "its sandbox failed: "+r.err.Error())
	}
	if r.res.Cancelled {
		return ErrCancelled
	}
	return g.notReady(r, "it exited ("+r.res.Reason()+")")
}

func (g *Group) notReady(r *running, reason string) error {
	r.log.Sync()
	return &NotReadyError{
		Step: g.cfg.Step, Alias: r.svc.Alias, Reason: reason,
		LogName: filepath.ToSlash(filepath.Join(g.cfg.LogName, r.svc.Alias+".log")),
		LogTail: tail(r.logPath, 20),
	}
}

// Status is how a service ended, for the step's result.
type Status struct {
	Alias  string `json:"alias"`
	Image  string `json:"image"`
	Digest string `json:"digest"`
	// Status is "stopped" (ran until the step ended, then killed),
	// "exited" (ended on its own with status 0) or "exited: " and how
	// ("exit status 1", "killed: out of memory"); "error" if its sandbox
	// failed.
	Status string `json:"status"`
	Log    string `json:"log"`
}

// status is how the service ended (see Status.Status), once done.
func (r *running) status() string {
	switch {
	case r.err != nil:
		return "error"
	case r.res.Cancelled:
		return "stopped"
	case r.res.ExitCode == 0 && !r.res.OOMKilled:
		return "exited"
	}
	return "exited: " + r.res.Reason()
}

// Stop kills and removes every service and reports how each ended. A
// service that exited before the step ended is logged: the step's own
// result says whether that mattered.
func (g *Group) Stop() error {
	if g == nil {
		return nil
	}
	var errs []error
	for _, r := range g.svcs {
		select {
		case <-r.done:
			if r.err == nil && !r.res.Cancelled {
				g.cfg.Logger.Warn("service ended before the step", "service", r.svc.Alias, "status", r.status())
			}
		default:
		}
		r.cancel()
		<-r.done
		r.log.Close()
		if r.err != nil {
			errs = append(errs, fmt.Errorf("step %q: service %q: %w", g.cfg.Step, r.svc.Alias, r.err))
		}
	}
	return errors.Join(errs...)
}

// Statuses describes the services after Stop.
func (g *Group) Statuses() []Status {
	if g == nil {
		return nil
	}
	out := make([]Status, 0, len(g.svcs))
	for _, r := range g.svcs {
		out = append(out, Status{
			Alias: r.svc.Alias, Image: r.svc.Image.Ref, Digest: r.svc.Image.Digest, Status: r.status(),
			Log: filepath.ToSlash(filepath.Join(g.cfg.LogName, r.svc.Alias+".log")),
		})
	}
	return out
}

// tail returns the last n lines of a file, each indented.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, "    "+sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// limitedBuffer keeps the first max bytes of a probe's output.
type limitedBuffer struct {
	mu  sync.Mutex
	b   *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.max - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
