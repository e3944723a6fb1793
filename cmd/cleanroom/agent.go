package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cleanroom-ci/cleanroom/agent"
)

type agentOptions struct {
	config      string
	listen      string
	natsURL     string
	dataDir     string
	id          string
	concurrency int
	tokensFile  string
}

func newAgentCommand(g *globalOptions) *cobra.Command {
	o := &agentOptions{}
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run a self-hosted CI agent: jobs from an HTTP API and push webhooks, built hermetically",
		Long: `agent runs cleanroom as a long-lived CI agent. It takes jobs from its HTTP
API (a git commit, or an uploaded source tarball) and from GitHub or GitLab
push webhooks, builds each with "cleanroom run" in a child process (its own
sandboxes, egress proxy, provenance and signatures), and serves the status,
live logs, outputs and signed provenance over the API and a web page at /.

State and queue live on NATS JetStream. By default the agent embeds a NATS
server with JetStream in its data directory: one machine, nothing else to
install. To share the work between several agents, point each at one
external NATS cluster (--nats-url); they pull from one work queue with
explicit acks and heartbeats, and a job whose agent dies is redelivered to
another (retried or failed per jobs.on_agent_loss), never run twice at once.

On SIGTERM or SIGINT the agent drains: it takes no new jobs, lets running
ones finish within jobs.grace, hands the rest back to the queue, and exits.

Endpoints: /healthz, /readyz, /metrics (Prometheus), /api/v1/... (see
docs/agent-api.md), /hooks/<name> (webhooks), / (web page).
Tokens: "cleanroom agent token create --scope submit|read|admin".
Configuration: docs/agent.md and examples/agent/agent.yaml.`,
		Example: `  # one machine, defaults: embedded JetStream, 127.0.0.1:8080
  cleanroom agent token create --name ci --scope submit
  cleanroom agent --config /etc/cleanroom/agent.yaml

  # one of several agents sharing a NATS cluster
  cleanroom agent --config /etc/cleanroom/agent.yaml --nats-url nats://nats-1:4222,nats://nats-2:4222`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runAgent(cmd, g, o) },
	}
	f := cmd.Flags()
	f.StringVarP(&o.config, "config", "c", agent.DefaultConfigPath, "agent configuration (YAML); a missing default file means all defaults")
	f.StringVar(&o.listen, "listen", "", "HTTP(S) listen address, HOST:PORT (overrides listen:)")
	f.StringVar(&o.natsURL, "nats-url", "", "external NATS server or cluster, comma-separated (overrides nats.url:); default: embedded")
	f.StringVar(&o.dataDir, "data-dir", "", "embedded JetStream store and job workspaces (overrides data_dir:)")
	f.StringVar(&o.id, "id", "", "this agent's name in job state and logs (default: host name and a suffix kept in the data dir)")
	f.IntVar(&o.concurrency, "concurrency", 0, "jobs run at once (overrides concurrency:; default: CPU cores)")
	f.StringVar(&o.tokensFile, "tokens-file", "", "API tokens file (overrides tokens_file:)")
	cmd.AddCommand(newAgentTokenCommand())
	return cmd
}

func runAgent(cmd *cobra.Command, g *globalOptions, o *agentOptions) error {
	log, err := g.logger()
	if err != nil {
		return systemFailure(err)
	}
	cfg, err := agent.LoadConfig(o.config, cmd.Flags().Changed("config"))
	if err != nil {
		return systemFailure(err)
	}
	if o.listen != "" {
		cfg.Listen = o.listen
	}
	if o.natsURL != "" {
		cfg.NATSURL = o.natsURL
	}
	if o.dataDir != "" {
		if cfg.DataDir, err = filepath.Abs(o.dataDir); err != nil {
			return systemFailure(err)
		}
	}
	if o.concurrency > 0 {
		cfg.Concurrency = o.concurrency
	}
	if o.tokensFile != "" {
		cfg.TokensFile = o.tokensFile
	}
	if os.Geteuid() != 0 {
		return systemFailure(errors.New("cleanroom agent needs root: its jobs create network namespaces and containers"))
	}
	bin, err := os.Executable()
	if err != nil {
		return systemFailure(err)
	}
	child := []string{"--state-dir", g.stateDir, "--namespace", g.namespace, "--log-level", g.logLevel}
	if g.address != "" {
		child = append(child, "--containerd-address", g.address)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err = agent.Run(ctx, agent.Options{
		Config: cfg, Binary: bin, ChildArgs: child, ID: o.id, Version: version, Logger: log,
	})
	if err != nil {
		return systemFailure(fmt.Errorf("agent: %w", err))
	}
	return nil
}
