package runner

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
	"github.com/cleanroom-ci/cleanroom/sandbox"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress/store"
	"github.com/cleanroom-ci/cleanroom/sandbox/netns"
)

// Workdir is where the workspace is mounted and steps start.
const Workdir = "/workspace"

// stepRun is a pipeline step ready to start: its log file, its output
// writer and its prepared sandbox.
type stepRun struct {
	cfg     Config
	step    pipeline.Step
	logFile *os.File
	out     *prefixWriter
	capped  *capWriter
	sb      *preparedSandbox
}

// prepareStep makes one pipeline step's sandbox (see prepareSandboxed),
// with the step's output prefixed on the run's output and copied to
// logs/<step>.log. The caller runs or discards it.
func prepareStep(ctx context.Context, cfg Config, idx int, step pipeline.Step, img sandbox.Image, svcs *ServiceSet, stage string, rec egress.Recorder) (*stepRun, StepResult, error) {
	p := cfg.Pipeline
	mode := p.StepEgressMode(step)
	if cfg.EgressMode != "" {
		mode = cfg.EgressMode
	}
	logPath := filepath.Join(stage, "logs", step.Name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, StepResult{Name: step.Name, Image: p.StepImage(step), Status: "error"}, err
	}
	r := &stepRun{cfg: cfg, step: step, logFile: logFile, out: newPrefixWriter(cfg.Output, "["+step.Name+"] ")}
	r.capped = newCapWriter(io.MultiWriter(logFile, r.out), cfg.LogLimit) // caps.go
	r.sb, err = prepareSandboxed(ctx, SandboxEnv{
		Executor: cfg.Executor, StateDir: cfg.StateDir, Logger: cfg.Logger,
		Recorder: rec, GoModUpstream: cfg.GoModUpstream, Trace: cfg.Trace,
		Inspect: cfg.inspection, Store: cfg.Store, TLSConfig: cfg.UpstreamTLS,
		Offline: cfg.Offline || cfg.Replay != nil, Replay: cfg.Replay.materials(),
	}, SandboxedStep{
		Name:         step.Name,
		ID:           fmt.Sprintf("cr-%s-%d-%s", cfg.RunID, idx, step.Name),
		Image:        img,
		Args:         []string{"/bin/sh", "-e", "-c", step.Run},
		Env:          reproEnv(cfg, p.StepEnv(step)), // rebuild.go
		Allow:        append(p.StepAllow(step), cfg.ExtraAllow...),
		Mode:         mode,
		Workspace:    cfg.ws.Dir,
		WorkspaceDir: stepWorkdir(cfg),
		Vary:         stepVariation(cfg),
		Mounts:       maskOutDir(cfg, stage),
		Limits: sandbox.Limits{
			MemoryBytes: step.Resources.MemoryBytes,
			CPUs:        step.Resources.CPUs,
			Pids:        step.Resources.Pids,
		},
		Timeout:  step.Timeout,
		Runtime:  cfg.runtime(),
		Output:   r.capped,
		Secrets:  cfg.Secrets,
		Inspect:  stepInspect(cfg, step), // inspect.go
		Cache:    stepCache(cfg, step),
		Services: svcs, // service.go
	})
	if err != nil {
		logFile.Close()
		sr := r.sb.result()
		sr.Image = p.StepImage(step)
		return nil, sr, err
	}
	return r, StepResult{}, nil
}

// run starts the step and waits for it.
func (r *stepRun) run(ctx context.Context) (StepResult, error) {
	defer r.logFile.Close()
	defer r.out.Flush()
	sr, err := r.sb.run(ctx)
	sr.Image = r.cfg.Pipeline.StepImage(r.step)
	sr.LogFile = filepath.Join("logs", r.step.Name+".log")
	if r.capped.dropped > 0 {
		r.cfg.Logger.Warn("step output truncated at the log cap", "step", r.step.Name, "discarded_bytes", r.capped.dropped)
	}
	if sr.Status == "oom" {
		r.cfg.Logger.Error("step killed: out of memory", "step", r.step.Name, "limit", pipeline.FormatSize(r.step.Resources.MemoryBytes))
	}
	return sr, err
}

// discard removes a prepared step that will not run, and its (empty)
// log: a skipped step has none.
func (r *stepRun) discard() {
	r.sb.discard()
	r.logFile.Close()
	os.Remove(r.logFile.Name())
}

// SandboxEnv is what every sandboxed script shares within a run.
type SandboxEnv struct {
	Executor      sandbox.Executor
	StateDir      string
	Logger        hclog.Logger
	Recorder      egress.Recorder
	GoModUpstream *url.URL
	Trace         sandbox.TraceFunc
	// Inspect is the run's TLS inspection (nil: none); Store keeps
	// downloaded bodies; TLSConfig verifies https upstreams (nil: the
	// host's roots); Offline/Replay cut the upstream (see inspect.go).
	Inspect   *Inspection
	Store     *store.Store
	TLSConfig *tls.Config
	Offline   bool
	Replay    *egress.Materials
}

// SandboxedStep is one script to run in a fresh sandbox.
type SandboxedStep struct {
	// Name is used in events, messages and labels.
	Name string
	// ID names the container and the namespace; it must start with
	// "cr-<run id>-" so that a later start can reap it.
	ID    string
	Image sandbox.Image
	Args  []string
	// Env is set over the image's environment; the proxy variables are
	// added (and win).
	Env []string
	// Allow is the egress allowlist; Mode "enforce" (default) or "audit".
	Allow []string
	Mode  string
	// Workspace is bind-mounted read-write at WorkspaceDir (default
	// /workspace), which is also the working directory.
	Workspace    string
	WorkspaceDir string
	// Mounts are further bind mounts.
	Mounts  []sandbox.Mount
	Limits  sandbox.Limits
	Timeout time.Duration
	// Output receives stdout and stderr, serialised.
	Output io.Writer
	// Secrets are added to the environment; their values are masked in
	// Output.
	Secrets map[string]string
	// Runtime is the OCI runtime ("": the executor's default).
	Runtime string
	// Inspect terminates the step's TLS (needs SandboxEnv.Inspect);
	// Cache is its egress.cache mode ("" is record).
	Inspect bool
	Cache   string
	// Attach, when set, runs once the namespace and its proxy are up
	// (proxy is the proxy's address inside the namespace) and before the
	// sandbox is created: it may open more listeners in ns, whose traffic
	// must leave through the proxy. What it returns is closed at teardown,
	// before the proxy stops.
	Attach func(nw sandbox.Network, proxy string) (io.Closer, error)
	// Vary is what a rebuild changes in the sandbox (zero: nothing).
	Vary sandbox.Variation
	// Services run beside the script in its namespace (nil: none).
	Services *ServiceSet
}

// Sandboxed runs one script: a fresh network namespace with the egress
// proxy listening inside, a fresh sandbox joined to it, output streamed,
// and all of it torn down before returning. It is the primitive both the
// pipeline engine and the GitLab driver use. A step's own failure is in the
// result (Status); an error means the sandbox failed, or ErrCancelled.
func Sandboxed(ctx context.Context, env SandboxEnv, st SandboxedStep) (StepResult, error) {
	p, err := prepareSandboxed(ctx, env, st)
	if err != nil {
		return p.result(), err
	}
	return p.run(ctx)
}

// preparedSandbox is a script whose namespace, proxy and (when the
// executor can prepare) sandbox exist, ready to start. The pipeline engine
// prepares the next step while the current one runs.
type preparedSandbox struct {
	env      SandboxEnv
	st       SandboxedStep
	log      hclog.Logger
	sr       StepResult
	nw       sandbox.Network
	proxy    *egress.Proxy
	ln       net.Listener
	served   chan struct{}
	masked   *maskWriter
	rec      *stepRecorder
	spec     sandbox.Spec
	box      sandbox.Prepared // nil: the executor runs spec in one go
	attached io.Closer
	cleaned  bool
	// svcProxies are the egress proxies of services (service.go).
	svcProxies []servedProxy
}

// result is what is known of the step before it ran (name, image,
// allowlist, mode).
func (p *preparedSandbox) result() StepResult { return p.sr }

// prepareSandboxed creates the script's namespace, starts its proxy and,
// when the executor implements sandbox.Preparer, creates its sandbox. On
// error everything it made is removed again.
func prepareSandboxed(ctx context.Context, env SandboxEnv, st SandboxedStep) (p *preparedSandbox, err error) {
	log := env.Logger.With("step", st.Name)
	mode := st.Mode
	if mode == "" {
		mode = pipeline.EgressEnforce
	}
	workdir := st.WorkspaceDir
	if workdir == "" {
		workdir = Workdir
	}
	p = &preparedSandbox{env: env, st: st, log: log, sr: StepResult{Name: st.Name, Image: st.Image.Ref, Allow: st.Allow, Mode: mode}}
	defer func() {
		if err != nil {
			p.cleanup(ctx)
		}
	}()
	p.rec = newStepRecorder(env.Recorder, log, st.Name) // caps.go
	start := time.Now()
	if p.nw, err = networkProvider(env).NewNetwork(ctx, sandbox.NetworkSpec{ID: st.ID, Runtime: st.Runtime}); err != nil {
		return p, err
	}
	policy, err := egress.NewPolicy(st.Allow)
	if err != nil {
		return p, fmt.Errorf("step %q: %w", st.Name, err)
	}
	m, err := egress.ParseMode(mode)
	if err != nil {
		return p, err
	}
	pcfg := egress.Config{
		Step:          st.Name,
		Policy:        policy,
		Mode:          m,
		Recorder:      p.rec,
		GoModUpstream: env.GoModUpstream,
		// Package managers open many connections at once (npm: hundreds);
		// the proxy's default of 256 turned bursts into 503s in the
		// benchmarks.
		MaxConns: 1024,
		Logger:   log.Named("egress"),
	}
	extras, err := sandboxExtras(ctx, env, st, &pcfg, log) // inspect.go
	if err != nil {
		return p, fmt.Errorf("step %q: %w", st.Name, err)
	}
	if p.proxy, err = egress.New(pcfg); err != nil {
		return p, err
	}
	if p.ln, err = p.nw.Listen("tcp", "127.0.0.1:0"); err != nil {
		return p, fmt.Errorf("open egress proxy in the step's namespace: %w", err)
	}
	p.served = make(chan struct{})
	go func() { p.proxy.Serve(p.ln); close(p.served) }()
	port := p.ln.Addr().(*net.TCPAddr).Port
	if st.Attach != nil {
		if p.attached, err = st.Attach(p.nw, p.ln.Addr().String()); err != nil {
			return p, fmt.Errorf("step %q: %w", st.Name, err)
		}
	}
	if env.Trace != nil {
		env.Trace("netns+proxy", start, time.Now(), "step", st.Name)
	}

	p.masked = newMaskWriter(st.Output, st.Secrets)
	var mu sync.Mutex // stdout and stderr share the writer
	out := &lockedWriter{mu: &mu, w: p.masked}
	p.spec = sandbox.Spec{
		ID:      st.ID,
		Image:   st.Image,
		Args:    st.Args,
		Env:     withEnv(stepEnv(append(st.Env, secretEnv(st.Secrets)...), port), extras.env),
		Cwd:     workdir,
		Mounts:  append(append([]sandbox.Mount{{Source: st.Workspace, Destination: workdir}}, st.Mounts...), extras.mounts...),
		Network: p.nw,
		Runtime: st.Runtime,
		Limits:  st.Limits,
		Timeout: st.Timeout,
		Labels:  map[string]string{sandbox.LabelStep: st.Name},
		Vary:    st.Vary,
	}
	if st.Services != nil {
		hosts, noProxy, err := st.Services.hostsMount() // service.go
		if err != nil {
			return p, fmt.Errorf("step %q: %w", st.Name, err)
		}
		p.spec.Mounts = append(p.spec.Mounts, hosts)
		p.spec.Env = withEnv(p.spec.Env, noProxy)
	}
	if pr, ok := env.Executor.(sandbox.Preparer); ok {
		t0 := time.Now()
		if p.box, err = pr.Prepare(ctx, p.spec, out, out); err != nil {
			return p, fmt.Errorf("step %q: sandbox failure: %w", st.Name, err)
		}
		if env.Trace != nil {
			env.Trace("sandbox.prepare", t0, time.Now(), "step", st.Name)
		}
	} else {
		p.box = &runLater{ex: env.Executor, spec: p.spec, out: out}
	}
	return p, nil
}

// runLater adapts an executor that cannot prepare: Start is Run.
type runLater struct {
	ex   sandbox.Executor
	spec sandbox.Spec
	out  io.Writer
}

func (r *runLater) Start(ctx context.Context) (sandbox.Result, error) {
	return r.ex.Run(ctx, r.spec, r.out, r.out)
}
func (r *runLater) Discard() error { return nil }

// cleanup stops the proxy and removes the namespace (and the sandbox, if
// it never started); it records the proxy's denials in the result.
func (p *preparedSandbox) cleanup(ctx context.Context) {
	if p.cleaned {
		return
	}
	p.cleaned = true
	if p.box != nil {
		if err := p.box.Discard(); err != nil {
			p.log.Error("cannot remove the prepared sandbox; the next start reaps what is left", "error", err)
		}
	}
	if p.attached != nil {
		p.attached.Close()
	}
	if p.proxy != nil && p.ln != nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		p.proxy.Shutdown(sctx)
		p.ln.Close()
		<-p.served
		p.sr.Denials, p.sr.WouldNeed = maskDenials(p.st.Secrets, p.proxy.Denials(), p.proxy.WouldNeed()) // hygiene.go
	}
	if p.rec != nil {
		p.rec.flush()
	}
	for _, sp := range p.svcProxies {
		sp.stop(ctx)
	}
	if p.masked != nil {
		p.masked.Flush()
	}
	if p.nw != nil {
		p.nw.Close()
	}
}

// discard removes a prepared script that will not run.
func (p *preparedSandbox) discard() { p.cleanup(context.Background()) }

// run starts the prepared script, waits for it and removes everything.
func (p *preparedSandbox) run(ctx context.Context) (StepResult, error) {
	st, log, sr := p.st, p.log, &p.sr
	log.Info("step starting", "image", st.Image.Ref, "digest", st.Image.Digest, "egress", strings.Join(st.Allow, ","), "mode", sr.Mode)
	svcs, err := p.startServices(ctx) // service.go
	if err != nil {
		sr.Services = svcs.Statuses()
		p.cleanup(ctx)
		if ctx.Err() != nil {
			sr.Status = "cancelled"
			return *sr, ErrCancelled
		}
		sr.Status = "error"
		return *sr, err
	}
	start := time.Now()
	r, err := p.box.Start(ctx)
	p.box = nil // started: its teardown is Start's
	if serr := svcs.Stop(); serr != nil && err == nil {
		err = serr
	}
	sr.Services = svcs.Statuses()
	if p.env.Trace != nil {
		p.env.Trace("sandbox.run", start, time.Now(), "step", st.Name)
	}
	setIDErr := stripSetIDMounts(p.spec.Mounts, log) // hygiene.go
	sr.Duration = time.Since(start)
	sr.DurationS = sr.Duration.Round(time.Millisecond).Seconds()
	p.cleanup(ctx)
	if err != nil {
		sr.Status = "error"
		return *sr, fmt.Errorf("step %q: sandbox failure: %w", st.Name, err)
	}
	sr.ExitCode = r.ExitCode
	switch {
	case r.Cancelled:
		sr.Status = "cancelled"
		return *sr, ErrCancelled
	case r.TimedOut:
		sr.Status = "timeout"
		log.Error("step timed out", "timeout", st.Timeout)
	case r.OOMKilled && r.ExitCode != 0:
		sr.Status = "oom"
	case r.ExitCode != 0:
		sr.Status = "failed"
		log.Error("step failed", "exit", r.ExitCode)
	default:
		sr.Status = "ok"
		if r.OOMKilled {
			log.Warn("a process of the step was killed for exceeding the memory limit; the step still succeeded")
		}
		log.Info("step succeeded", "duration", sr.Duration.Round(time.Millisecond))
	}
	if setIDErr != nil && sr.Status == "ok" {
		// The step made a tree the runner cannot check for setuid files:
		// its outputs cannot be trusted, and the step fails.
		sr.Status, sr.ExitCode = "failed", 1
		log.Error("step failed: a directory the step wrote cannot be checked for setuid/setgid files", "error", setIDErr)
	}
	return *sr, nil
}

// stepEnv is what the runner sets in the step, over the image's own
// environment: what the pipeline sets, the proxy variables (which the
// pipeline may not set: the loader rejects them, and they override any the
// image sets), CI=true and HOME (the root filesystem is read-only, /tmp is
// writable). Nothing of the runner's own environment is inherited, so the
// runner's secrets cannot leak in.
func stepEnv(pipelineEnv []string, port int) []string {
	proxy := fmt.Sprintf("http://127.0.0.1:%d", port)
	env := map[string]string{
		"HOME":        "/tmp",
		"CI":          "true",
		"HTTP_PROXY":  proxy,
		"HTTPS_PROXY": proxy,
		"http_proxy":  proxy,
		"https_proxy": proxy,
		"NO_PROXY":    "",
		"no_proxy":    "",
		// The Go command routes the checksum database through GOPROXY
		// itself ("proxying a checksum database"), so GOSUMDB keeps its
		// default and still verifies every module.
		"GOPROXY": proxy + "/gomod/",
	}
	for _, kv := range pipelineEnv {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// maskOutDir hides the output directory from the step when it lies inside
// the workspace, with an empty read-only directory mounted over it: a step
// must not read earlier provenance as input nor plant files there.
func maskOutDir(cfg Config, stage string) []sandbox.Mount {
	if cfg.ws.Mode != WorkspaceReused {
		return nil // a fresh workspace never contains the output directory
	}
	rel, err := filepath.Rel(cfg.Workspace, cfg.OutDir)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") || filepath.IsAbs(rel) {
		return nil
	}
	if _, err := os.Stat(cfg.OutDir); err != nil {
		// A mount point must exist; create the (empty) output dir.
		if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
			return nil
		}
	}
	empty := filepath.Join(stage, "empty")
	os.MkdirAll(empty, 0o555)
	return []sandbox.Mount{{Source: empty, Destination: filepath.Join(Workdir, filepath.ToSlash(rel)), ReadOnly: true}}
}

// networkProvider is the executor's, or else plain loopback-only network
// namespaces owned by the host.
func networkProvider(env SandboxEnv) sandbox.NetworkProvider {
	if np, ok := env.Executor.(sandbox.NetworkProvider); ok {
		return np
	}
	return netns.Provider{Dir: NetNSDir(env.StateDir)}
}

// runtime is the run's runtime choice: --runtime, else the pipeline's.
func (c Config) runtime() string {
	if c.Runtime != "" {
		return c.Runtime
	}
	return c.Pipeline.Runtime
}

// NetNSDir is where a run's namespace files live.
func NetNSDir(stateDir string) string { return filepath.Join(stateDir, "netns") }
