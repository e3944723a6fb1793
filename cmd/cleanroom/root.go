package main

import (
	"fmt"
	"io"
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

type globalOptions struct {
	logFormat string
	logLevel  string
	stateDir  string
	address   string
	namespace string
	// errOut is the command's stderr (os.Stderr, or a test's buffer).
	errOut io.Writer
	// Isolation: --no-userns, and a runtime an administrator forces
	// (--force-runtime; the agent's and GitLab policy's runtime setting).
	noUserNS     bool
	forceRuntime string
}

func newRootCommand() *cobra.Command {
	g := &globalOptions{}
	root := &cobra.Command{
		Use:   "cleanroom",
		Short: "Run build pipelines in hermetic, recorded, signed sandboxes",
		Long: `cleanroom runs each step of a pipeline (cleanroom.yaml) in a fresh containerd
sandbox: read-only root, no new privileges, a minimal capability set, seccomp,
cgroup limits and a time limit. A step has no network except a loopback proxy
that allows only what the pipeline's egress allowlist names and records every
request, so what went into a build is known.

Exit codes: 0 success, 1 a step failed (build failure), 2 configuration or
infrastructure failure (system failure).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
		PersistentPreRun: func(cmd *cobra.Command, _ []string) {
			g.errOut = cmd.ErrOrStderr()
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	pf.StringVar(&g.stateDir, "state-dir", "/run/cleanroom", "runtime state: namespaces, run locks, a private containerd")
	pf.StringVar(&g.address, "containerd-address", "", "containerd socket to use (default: "+defaultAddressHelp+")")
	pf.StringVar(&g.namespace, "namespace", "cleanroom", "containerd namespace for images and containers")
	pf.BoolVar(&g.noUserNS, "no-userns", false, "run runc and crun steps as host root (with the step's capabilities) instead of in a user namespace of their own; weaker, for hosts where user namespaces cannot work")
	pf.StringVar(&g.forceRuntime, "force-runtime", "", "run every step under this OCI runtime (runc, crun, runsc), whatever the pipeline or --runtime ask for")

	root.AddCommand(newRunCommand(g), newRebuildCommand(g), newDiffCommand(), newImageCommand(g), newLintCommand(g), newVerifyCommand(), newKeygenCommand(), newVersionCommand(), newGitLabCommand(g),
		newExportMaterialsCommand(g), newImportMaterialsCommand(g), newAgentCommand(g))
	return root
}

const defaultAddressHelp = "/run/containerd/containerd.sock, or a private daemon started under --state-dir when none answers"

func (g *globalOptions) logger() (hclog.Logger, error) {
	level := hclog.LevelFromString(g.logLevel)
	if level == hclog.NoLevel {
		return nil, fmt.Errorf("--log-level %q: use trace, debug, info, warn or error", g.logLevel)
	}
	var json bool
	switch g.logFormat {
	case "text":
	case "json":
		json = true
	default:
		return nil, fmt.Errorf("--log-format %q: use text or json", g.logFormat)
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       "cleanroom",
		Level:      level,
		Output:     g.stderr(),
		JSONFormat: json,
		Color:      hclog.AutoColor,
	}), nil
}

func (g *globalOptions) stderr() io.Writer {
	if g.errOut != nil {
		return g.errOut
	}
	return os.Stderr
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "cleanroom", version)
		},
	}
}
