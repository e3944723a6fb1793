// Package agent is `cleanroom agent`: a self-hosted CI agent that takes
// jobs from an HTTP API and push webhooks, runs each with `cleanroom run`
// in a child process (so one job's crash cannot take the agent down and
// cancel is the same SIGTERM path a developer's Ctrl-C takes), and serves
// the logs, outputs and signed provenance. Its queue and state live on
// NATS JetStream (package jobs): embedded for one machine, an external
// cluster for several agents sharing the work.
package agent

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/cleanroom-ci/cleanroom/agent/auth"
	"github.com/cleanroom-ci/cleanroom/agent/jobs"
	"github.com/cleanroom-ci/cleanroom/agent/webhook"
	"github.com/cleanroom-ci/cleanroom/internal/flock"
)

// Options are what the command line adds to the configuration.
type Options struct {
	Config *Config
	// Binary is the cleanroom executable run for each job; ChildArgs are
	// the global flags it gets (state dir, containerd address, namespace).
	Binary    string
	ChildArgs []string
	// ID names this agent in job state and logs (default: host name and
	// a suffix kept in the data directory).
	ID      string
	Version string
	Logger  hclog.Logger
	// Ready, if set, is called with the listening address once the agent
	// takes requests.
	Ready func(addr net.Addr)
}

// Agent is one running agent.
type Agent struct {
	cfg    *Config
	opts   Options
	id     string
	log    hclog.Logger
	broker *jobs.Broker
	auth   *auth.Authenticator
	hooks  map[string]webhook.Hook
	// cancelSupersededHooks are the hooks whose new pushes cancel the
	// branch's earlier unfinished jobs.
	cancelSupersededHooks map[string]bool
	metrics               *metrics

	slots   chan struct{}
	running sync.Map // job ID → *running
	pending sync.Map // job ID → *pendingEntry: results waiting for NATS
	wg      sync.WaitGroup
	// bg outlives every job: final writes happen on it. jobsCtx is
	// cancelled (with errDraining) when the drain grace runs out.
	bg         context.Context
	jobsCtx    context.Context
	cancelJobs context.CancelCauseFunc
	draining   atomic.Bool
}

// Run starts the agent and blocks until ctx is cancelled (SIGTERM), then
// drains: it stops taking jobs, lets running ones finish within the
// grace period, hands the rest back to the queue, and returns.
func Run(ctx context.Context, opts Options) error {
	cfg := opts.Config
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return err
	}
	unlock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return err
	}
	defer unlock()
	id := opts.ID
	if id == "" {
		if id, err = agentID(cfg.DataDir); err != nil {
			return err
		}
	}
	log = log.With("agent", id)
	a := &Agent{cfg: cfg, opts: opts, id: id, log: log, slots: make(chan struct{}, cfg.Concurrency), bg: context.Background()}
	a.jobsCtx, a.cancelJobs = context.WithCancelCause(context.Background())
	defer a.cancelJobs(nil)
	if cfg.NATSURL == "" && cfg.NATSReplicas > 1 {
		return errors.New("nats.replicas > 1 needs a NATS cluster (nats.url or --nats-url); the embedded server is a single node")
	}
	if a.hooks, err = loadHooks(cfg.Webhooks, cfg.SourceAllow); err != nil {
		return err
	}
	a.cancelSupersededHooks = map[string]bool{}
	for _, w := range cfg.Webhooks {
		a.cancelSupersededHooks[w.Name] = w.CancelSuperseded
	}
	if a.auth, err = openAuth(cfg.TokensFile, log); err != nil {
		return err
	}

	octx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	a.broker, err = jobs.Open(octx, jobs.Options{
		URL: cfg.NATSURL, Credentials: cfg.NATSCredentials, Replicas: cfg.NATSReplicas,
		StoreDir: filepath.Join(cfg.DataDir, "jetstream"), AckWait: cfg.AckWait,
		Name: "cleanroom-agent " + id, Logger: log.Named("nats"),
	})
	if err != nil {
		return err
	}
	defer a.broker.Close()
	a.metrics = newMetrics(a)
	a.auth.OnFailure = a.metrics.authFailure
	a.restoreJobDirs()
	kaCtx, stopKeepalive := context.WithCancel(context.Background())
	kaDone := make(chan struct{})
	go func() { defer close(kaDone); a.keepalive(kaCtx) }()
	defer func() { stopKeepalive(); <-kaDone }()

	ln, srv, err := listen(cfg, a.routes(), log)
	if err != nil {
		return err
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	mode := "embedded NATS JetStream in " + filepath.Join(cfg.DataDir, "jetstream")
	if cfg.NATSURL != "" {
		mode = "NATS " + jobs.RedactURL(cfg.NATSURL)
	}
	log.Info("agent started", "listen", ln.Addr().String(), "tls", cfg.TLSCert != "", "concurrency", cfg.Concurrency, "queue", mode, "version", opts.Version)
	if opts.Ready != nil {
		opts.Ready(ln.Addr())
	}

	workCtx, stopWork := context.WithCancel(ctx)
	defer stopWork()
	go a.purge(workCtx)
	workDone := make(chan struct{})
	go func() { defer close(workDone); a.work(workCtx) }()

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		stopWork()
		<-workDone
		a.cancelJobs(errDraining)
		a.wg.Wait()
		return fmt.Errorf("http server: %w", err)
	}
	a.drain(stopWork, workDone, srv)
	return nil
}

// drain takes no new jobs, waits up to jobs.grace for the running ones,
// then hands those still running back to the queue, and stops serving.
func (a *Agent) drain(stopWork func(), workDone <-chan struct{}, srv *http.Server) {
	a.draining.Store(true)
	stopWork()
	<-workDone
	n := a.count()
	a.log.Info("draining: no new jobs; waiting for running ones", "running", n, "grace", a.cfg.Grace)
	finished := make(chan struct{})
	go func() { a.wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(a.cfg.Grace):
		a.log.Warn("drain grace over: handing running jobs back to the queue", "running", a.count())
		a.cancelJobs(errDraining)
		<-finished
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	srv.Shutdown(sctx)
	a.log.Info("agent stopped")
}

// openAuth opens the token store (warning when it holds no token: then
// every request is refused) behind a limiter of failed attempts.
func openAuth(tokensFile string, log hclog.Logger) (*auth.Authenticator, error) {
	if tokensFile == "" {
		tokensFile = auth.DefaultTokensFile
	}
	store, err := auth.OpenStore(tokensFile)
	if err != nil {
		return nil, err
	}
	store.SetLogger(log.Named("auth"))
	if store.Len() == 0 {
		log.Warn("no API tokens: every API request and the web page are refused until one is created", "tokens_file", tokensFile, "create", "cleanroom agent token create --tokens-file "+tokensFile+" --name NAME --scope read|submit|admin")
	}
	return &auth.Authenticator{Store: store, Limiter: auth.NewFailureLimiter(10, 6*time.Second), Logger: log.Named("auth")}, nil
}

// listen opens the API's listener, with TLS when configured, and the
// server that will serve it.
func listen(cfg *Config, h http.Handler, log hclog.Logger) (net.Listener, *http.Server, error) {
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			ln.Close()
			return nil, nil, fmt.Errorf("tls: %w", err)
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	return ln, srv, nil
}

// purge deletes finished jobs older than jobs.retention, hourly: state,
// logs and outputs would otherwise grow for ever. Every agent does it;
// deletions are idempotent.
func (a *Agent) purge(ctx context.Context) {
	t := time.NewTimer(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := a.broker.Purge(ctx, time.Now().Add(-a.cfg.Retention))
		switch {
		case err != nil && ctx.Err() == nil:
			a.log.Warn("purging old jobs failed", "error", err)
		case n > 0:
			a.log.Info("purged finished jobs past jobs.retention", "jobs", n, "retention", a.cfg.Retention)
		}
		t.Reset(time.Hour)
	}
}

func (a *Agent) count() int {
	n := 0
	a.running.Range(func(any, any) bool { n++; return true })
	return n
}

// agentID is the host name plus a suffix kept in the data directory, so
// that an agent restarted on the same disk recognises its own lost jobs
// and two agents on one host differ.
func agentID(dataDir string) (string, error) {
	p := filepath.Join(dataDir, "agent-id")
	if b, err := os.ReadFile(p); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	host, _ := os.Hostname()
	var r [3]byte
	rand.Read(r[:])
	id := strings.ToLower(host) + "-" + hex.EncodeToString(r[:])
	return id, os.WriteFile(p, []byte(id+"\n"), 0o600)
}

// lockDataDir makes sure one agent uses a data directory (the embedded
// JetStream store and job workspaces are not shareable).
func lockDataDir(dir string) (func(), error) {
	l, err := flock.Try(filepath.Join(dir, "agent.lock"), flock.Exclusive)
	if errors.Is(err, flock.ErrLocked) {
		return nil, fmt.Errorf("another agent is using %s; give each agent its own data_dir", dir)
	}
	if err != nil {
		return nil, err
	}
	return func() { l.Release() }, nil
}

// loadHooks reads the webhooks' secrets and checks each hook completely
// at start, so that a misconfigured hook fails the agent now rather than
// every delivery later.
func loadHooks(in []Webhook, sourceAllow []string) (map[string]webhook.Hook, error) {
	out := map[string]webhook.Hook{}
	for _, w := range in {
		secret, err := os.ReadFile(w.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("webhook %s: secret: %w", w.Name, err)
		}
		s := []byte(strings.TrimRight(string(secret), "\r\n"))
		if len(s) < 16 {
			return nil, fmt.Errorf("webhook %s: the secret in %s is shorter than 16 bytes; use a long random one (e.g. openssl rand -hex 32)", w.Name, w.SecretFile)
		}
		h := webhook.Hook{Name: w.Name, Provider: webhook.Provider(w.Provider), Secret: s, Repository: w.Repository, Refs: w.Refs, Pipeline: w.Pipeline, PullRequests: w.PullRequests}
		if err := h.Check(); err != nil {
			return nil, err
		}
		if _, err := safeRel(h.PipelinePath()); err != nil {
			return nil, fmt.Errorf("webhook %s: pipeline: %w", w.Name, err)
		}
		u, err := url.Parse(w.Repository)
		if err != nil {
			return nil, fmt.Errorf("webhook %s: repository: %w", w.Name, err)
		}
		if err := gitHostAllowed(sourceAllow, u); err != nil {
			return nil, fmt.Errorf("webhook %s: %w", w.Name, err)
		}
		out[w.Name] = h
	}
	return out, nil
}
