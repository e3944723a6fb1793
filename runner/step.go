package runner

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
	"github.com/cleanroom-ci/cleanroom/sandbox"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
	"github.com/cleanroom-ci/cleanroom/sandbox/netns"
)

// Workdir is where the workspace is mounted and steps start.
const Workdir = "/workspace"

// runStep runs one step: a fresh network namespace with the egress proxy
// listening inside, a fresh sandbox joined to it, output streamed, and all
// of it torn down before returning.
func runStep(ctx context.Context, cfg Config, idx int, step pipeline.Step, img sandbox.Image, stage string, rec egress.Recorder) (sr StepResult, err error) {
	p := cfg.Pipeline
	log := cfg.Logger.With("step", step.Name)
	allow := append(p.StepAllow(step), cfg.ExtraAllow...)
	mode := p.StepEgressMode(step)
	if cfg.EgressMode != "" {
		mode = cfg.EgressMode
	}
	sr = StepResult{Name: step.Name, Image: p.StepImage(step), Allow: allow, Mode: mode}

	id := fmt.Sprintf("cr-%s-%d-%s", cfg.RunID, idx, step.Name)
	start := time.Now()
	ns, err := netns.New(NetNSDir(cfg.StateDir), id)
	if err != nil {
		return sr, err
	}
	defer ns.Close()

	policy, err := egress.NewPolicy(allow)
	if err != nil {
		return sr, fmt.Errorf("step %q: %w", step.Name, err)
	}
	m, _ := egress.ParseMode(mode)
	proxy, err := egress.New(egress.Config{
		Step:          step.Name,
		Policy:        policy,
		Mode:          m,
		Recorder:      &warnOnce{next: rec, log: log},
		GoModUpstream: cfg.GoModUpstream,
		Logger:        log.Named("egress"),
	})
	if err != nil {
		return sr, err
	}
	ln, err := ns.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return sr, fmt.Errorf("open egress proxy in the step's namespace: %w", err)
	}
	serveDone := make(chan struct{})
	go func() { proxy.Serve(ln); close(serveDone) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		proxy.Shutdown(sctx)
		ln.Close()
		<-serveDone
		sr.Denials = proxy.Denials()
		sr.WouldNeed = proxy.WouldNeed()
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	cfg.trace("netns+proxy", start, time.Now(), "step", step.Name)

	logPath := filepath.Join(stage, "logs", step.Name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return sr, err
	}
	defer logFile.Close()
	sr.LogFile = filepath.Join("logs", step.Name+".log")
	out := newPrefixWriter(cfg.Output, "["+step.Name+"] ")
	defer out.Flush()
	var mu sync.Mutex // stdout and stderr share the log file and the prefixer
	stdout := &lockedWriter{mu: &mu, w: io.MultiWriter(logFile, out)}
	stderr := stdout

	spec := sandbox.Spec{
		ID:    id,
		Image: img,
		Args:  []string{"/bin/sh", "-e", "-c", step.Run},
		Env:   stepEnv(p.StepEnv(step), port),
		Cwd:   Workdir,
		Mounts: append([]sandbox.Mount{{Source: cfg.Workspace, Destination: Workdir}},
			maskOutDir(cfg, stage)...),
		NetNSPath: ns.Path(),
		Limits: sandbox.Limits{
			MemoryBytes: step.Resources.MemoryBytes,
			CPUs:        step.Resources.CPUs,
			Pids:        step.Resources.Pids,
		},
		Timeout: step.Timeout,
		Labels:  map[string]string{sandbox.LabelStep: step.Name},
	}
	log.Info("step starting", "image", img.Ref, "digest", img.Digest, "egress", strings.Join(allow, ","), "mode", mode)
	runStart := time.Now()
	r, err := cfg.Executor.Run(ctx, spec, stdout, stderr)
	cfg.trace("sandbox.run", runStart, time.Now(), "step", step.Name)
	sr.Duration = time.Since(start)
	sr.DurationS = sr.Duration.Round(time.Millisecond).Seconds()
	if err != nil {
		sr.Status = "error"
		return sr, fmt.Errorf("step %q: sandbox failure: %w", step.Name, err)
	}
	sr.ExitCode = r.ExitCode
	switch {
	case r.Cancelled:
		sr.Status = "cancelled"
		return sr, ErrCancelled
	case r.TimedOut:
		sr.Status = "timeout"
		log.Error("step timed out", "timeout", step.Timeout)
	case r.OOMKilled:
		sr.Status = "oom"
		log.Error("step killed: out of memory", "limit", pipeline.FormatSize(step.Resources.MemoryBytes))
	case r.ExitCode != 0:
		sr.Status = "failed"
		log.Error("step failed", "exit", r.ExitCode)
	default:
		sr.Status = "ok"
		log.Info("step succeeded", "duration", sr.Duration.Round(time.Millisecond))
	}
	return sr, nil
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

// NetNSDir is where a run's namespace files live.
func NetNSDir(stateDir string) string { return filepath.Join(stateDir, "netns") }

// warnOnce forwards events and logs each distinct denial once per step.
type warnOnce struct {
	next egress.Recorder
	log  interface {
		Warn(string, ...any)
	}
	mu   sync.Mutex
	seen map[string]bool
}

func (w *warnOnce) Record(e egress.Event) {
	w.next.Record(e)
	if e.Decision != egress.DecisionDeny {
		return
	}
	key := fmt.Sprintf("%s:%d", e.Host, e.Port)
	w.mu.Lock()
	first := !w.seen[key]
	if w.seen == nil {
		w.seen = map[string]bool{}
	}
	w.seen[key] = true
	w.mu.Unlock()
	if first {
		w.log.Warn("egress denied", "target", key, "reason", e.Reason)
	}
}
