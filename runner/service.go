package runner

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
	"github.com/cleanroom-ci/cleanroom/runner/services"
	"github.com/cleanroom-ci/cleanroom/sandbox"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
)

// ServiceSet is the services a sandboxed script runs beside it (see
// package services), and where their files go.
type ServiceSet struct {
	Services []ServiceSpec
	// HostsFile is written with the aliases and mounted at /etc/hosts in
	// the step and every service; LogDir receives one log per service,
	// LogName is how messages name LogDir.
	HostsFile string
	LogDir    string
	LogName   string
}

// ServiceSpec is one service and its own egress allowlist (empty: none).
type ServiceSpec struct {
	services.Service
	Allow []string
}

// privateDir holds files of the run's staging directory that are neither
// outputs nor byproducts (the steps' hosts files).
const privateDir = "private"

// pipelineServices resolves a step's services for the sandbox.
func pipelineServices(cfg Config, step pipeline.Step, images map[string]sandbox.Image, stage string) *ServiceSet {
	svcs := cfg.Pipeline.StepServices(step)
	if len(svcs) == 0 {
		return nil
	}
	set := &ServiceSet{
		HostsFile: filepath.Join(stage, privateDir, step.Name+".hosts"),
		LogDir:    filepath.Join(stage, "logs", "services", step.Name),
		LogName:   "logs/services/" + step.Name,
	}
	for _, s := range svcs {
		sp := ServiceSpec{Allow: s.Allow, Service: services.Service{
			Alias: s.Alias,
			Image: images[s.Image],
			Env:   pipeline.SortedEnv(s.Env),
			Ready: services.Readiness{Port: s.Ready.Port, Command: s.Ready.Command, Timeout: s.Ready.Timeout},
			Limits: sandbox.Limits{
				MemoryBytes: s.Resources.MemoryBytes,
				CPUs:        s.Resources.CPUs,
				Pids:        s.Resources.Pids,
			},
		}}
		if s.Entrypoint != nil {
			// An entrypoint replaces the image's cmd too (Docker's rule).
			sp.Args = append(append([]string{}, s.Entrypoint...), s.Command...)
		} else {
			sp.Command = s.Command
		}
		set.Services = append(set.Services, sp)
	}
	return set
}

// aliases lists the services' host names.
func (s *ServiceSet) aliases() []string {
	var out []string
	for _, sp := range s.Services {
		out = append(out, sp.Alias)
	}
	return out
}

// hostsMount writes the hosts file (loopback names and every alias on
// 127.0.0.1: the services listen in the step's own namespace) and returns
// its mount, and the NO_PROXY that keeps clients from sending requests
// for the aliases to the egress proxy, which would refuse them anyway.
func (s *ServiceSet) hostsMount() (sandbox.Mount, map[string]string, error) {
	content := fmt.Sprintf("127.0.0.1\tlocalhost cleanroom %s\n::1\tlocalhost ip6-localhost ip6-loopback\n", strings.Join(s.aliases(), " "))
	if err := os.MkdirAll(filepath.Dir(s.HostsFile), 0o755); err != nil {
		return sandbox.Mount{}, nil, err
	}
	if err := os.WriteFile(s.HostsFile, []byte(content), 0o644); err != nil {
		return sandbox.Mount{}, nil, err
	}
	noProxy := strings.Join(append([]string{"localhost", "127.0.0.1", "::1"}, s.aliases()...), ",")
	return sandbox.Mount{Source: s.HostsFile, Destination: "/etc/hosts", ReadOnly: true},
		map[string]string{"NO_PROXY": noProxy, "no_proxy": noProxy}, nil
}

// startServices starts the script's services in its namespace and waits
// until they are ready. A service with an allowlist gets a proxy of its
// own (its requests recorded as "<step>/<alias>"); one without gets no
// proxy variables.
func (p *preparedSandbox) startServices(ctx context.Context) (*services.Group, error) {
	set := p.st.Services
	if set == nil || len(set.Services) == 0 {
		return nil, nil
	}
	start := time.Now()
	hosts := sandbox.Mount{Source: set.HostsFile, Destination: "/etc/hosts", ReadOnly: true}
	list := make([]services.Service, 0, len(set.Services))
	for _, sp := range set.Services {
		svc := sp.Service
		svc.Env = withEnv(svc.Env, map[string]string{"HOME": "/tmp"})
		if len(sp.Allow) > 0 {
			env, err := p.serviceProxy(ctx, sp)
			if err != nil {
				return nil, fmt.Errorf("step %q: service %q: %w", p.st.Name, sp.Alias, err)
			}
			svc.Env = withEnv(svc.Env, env)
		}
		list = append(list, svc)
	}
	g, err := services.Start(ctx, services.Config{
		Executor: p.env.Executor,
		Step:     p.st.Name,
		IDPrefix: p.st.ID,
		Network:  p.nw,
		Runtime:  p.st.Runtime,
		Dial:     func(ctx context.Context, addr string) (net.Conn, error) { return p.nw.Dial(ctx, "tcp", addr) },
		Mounts:   []sandbox.Mount{hosts},
		LogDir:   set.LogDir,
		LogName:  set.LogName,
		Logger:   p.log,
	}, list)
	if p.env.Trace != nil {
		p.env.Trace("services.start", start, time.Now(), "step", p.st.Name)
	}
	return g, err
}

// serviceProxy starts an egress proxy for one service, listening in the
// script's namespace, and returns the service's proxy variables.
func (p *preparedSandbox) serviceProxy(ctx context.Context, sp ServiceSpec) (map[string]string, error) {
	name := p.st.Name + "/" + sp.Alias
	policy, err := egress.NewPolicy(sp.Allow)
	if err != nil {
		return nil, err
	}
	log := p.log.With("service", sp.Alias)
	rec := newStepRecorder(p.env.Recorder, log, name) // caps.go
	pcfg := egress.Config{
		Step:          name,
		Policy:        policy,
		Mode:          egress.Enforce,
		Recorder:      rec,
		GoModUpstream: p.env.GoModUpstream,
		MaxConns:      256,
		Logger:        log.Named("egress"),
	}
	extras, err := sandboxExtras(ctx, p.env, SandboxedStep{Name: name, Image: sp.Image}, &pcfg, log)
	if err != nil {
		return nil, err
	}
	if len(extras.mounts) > 0 {
		return nil, fmt.Errorf("a service's egress cannot be inspected (offline and replay runs inspect TLS); give it no egress.allow")
	}
	proxy, err := egress.New(pcfg)
	if err != nil {
		return nil, err
	}
	ln, err := p.nw.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("open the service's egress proxy in the step's namespace: %w", err)
	}
	served := make(chan struct{})
	go func() { proxy.Serve(ln); close(served) }()
	p.svcProxies = append(p.svcProxies, servedProxy{proxy: proxy, ln: ln, served: served, rec: rec})
	env := map[string]string{}
	for _, kv := range stepEnv(nil, ln.Addr().(*net.TCPAddr).Port) {
		k, v, _ := strings.Cut(kv, "=")
		if k != "HOME" && k != "CI" {
			env[k] = v
		}
	}
	noProxy := strings.Join(append([]string{"localhost", "127.0.0.1", "::1"}, p.st.Services.aliases()...), ",")
	env["NO_PROXY"], env["no_proxy"] = noProxy, noProxy
	return env, nil
}

type servedProxy struct {
	proxy  *egress.Proxy
	ln     net.Listener
	served chan struct{}
	rec    *stepRecorder
}

func (s servedProxy) stop(ctx context.Context) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	s.proxy.Shutdown(sctx)
	s.ln.Close()
	<-s.served
	s.rec.flush()
}
