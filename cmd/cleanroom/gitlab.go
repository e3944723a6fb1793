package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/cleanroom-ci/cleanroom/runner/gitlab"
)

// policyEnv overrides the policy path. gitlab-runner passes job variables
// only as CUSTOM_ENV_*, so a job cannot set it.
const policyEnv = "CLEANROOM_GITLAB_POLICY"

type gitlabOptions struct {
	policy string
}

func newGitLabCommand(g *globalOptions) *cobra.Command {
	o := &gitlabOptions{}
	cmd := &cobra.Command{
		Use:   "gitlab",
		Short: "GitLab Runner custom executor driver (config, prepare, run, cleanup)",
		Long: `The gitlab commands are a GitLab Runner custom executor: point config_exec,
prepare_exec, run_exec and cleanup_exec of a [[runners]] entry with
executor = "custom" at this binary with args ["gitlab", "config"],
["gitlab", "prepare"], ["gitlab", "run"] and ["gitlab", "cleanup"].

Stages that talk to GitLab (sources, cache, artifacts) run in the policy's
helper image and may reach only the GitLab instance; the job's own stages
run in the job image and may reach only the job's egress allowlist. Each
stage is a fresh sandbox. See docs/gitlab.md.

The admin policy is read from --policy, else $` + policyEnv + `, else
` + gitlab.DefaultPolicyPath + `.`,
	}
	cmd.PersistentFlags().StringVar(&o.policy, "policy", "", "admin policy file (default: $"+policyEnv+" or "+gitlab.DefaultPolicyPath+")")
	cmd.PersistentPreRun = func(*cobra.Command, []string) {
		// gitlab-runner reads the driver's output through pipes; when it
		// dies mid-stage a write must fail (EPIPE), not kill the driver
		// before it has torn the stage's sandbox down.
		signal.Ignore(syscall.SIGPIPE)
	}

	cmd.AddCommand(&cobra.Command{
		Use:   "config",
		Short: "config_exec: print the job's builds and cache directories as JSON",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := o.driver(g)
			if err != nil {
				return contractExit(err)
			}
			out, err := d.Config()
			if err != nil {
				return &exitError{code: d.Contract.ExitCode(err), err: err}
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(out)
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "prepare",
		Short: "prepare_exec: check the job against the policy and make its images ready",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := o.driver(g)
			if err != nil {
				return contractExit(err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			err = d.Prepare(ctx)
			return driverExit(d, err)
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "run SCRIPT STAGE",
		Short: "run_exec: run one stage's script in a fresh sandbox",
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := o.driver(g)
			if err != nil {
				return contractExit(err)
			}
			if len(args) != 2 {
				return &exitError{code: d.Contract.SystemFailureExitCode, err: fmt.Errorf("run wants 2 arguments (SCRIPT STAGE), got %d", len(args))}
			}
			// Signals are the driver's to handle: the stage gets SIGTERM
			// and a grace period, and run still records the outcome.
			sigs := make(chan os.Signal, 2)
			signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
			defer signal.Stop(sigs)
			err = d.Run(cmd.Context(), args[0], args[1], sigs)
			return driverExit(d, err)
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "cleanup",
		Short: "cleanup_exec: remove everything of the job (and of abandoned jobs); always exits 0",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, _ := g.logger()
			if log == nil {
				log = hclog.New(&hclog.LoggerOptions{Output: os.Stderr})
			}
			d, err := o.driver(g)
			if err != nil {
				log.Warn("cleanup: cannot load the policy; nothing removed", "error", err)
				return nil
			}
			// Not cancelled by the job's cancel (the runner runs cleanup
			// on a context of its own); a signal still ends it early.
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			if err := d.Cleanup(ctx); err != nil {
				for _, e := range unjoin(err) {
					log.Warn("cleanup: problem (the job is not failed for it)", "error", e)
				}
			}
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "check-policy",
		Short: "Validate the admin policy and print it as resolved",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := gitlab.LoadPolicy(o.policyPath())
			if err != nil {
				return systemFailure(err)
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(p.Summary())
		},
	})
	return cmd
}

func (o *gitlabOptions) policyPath() string {
	if o.policy != "" {
		return o.policy
	}
	if p := os.Getenv(policyEnv); p != "" {
		return p
	}
	return gitlab.DefaultPolicyPath
}

// driver wires a Driver from the flags, the policy and the environment.
func (o *gitlabOptions) driver(g *globalOptions) (*gitlab.Driver, error) {
	contract := gitlab.ContractFromEnv(os.Getenv)
	log, err := g.logger()
	if err != nil {
		return nil, &contractError{contract, err}
	}
	policy, err := gitlab.LoadPolicy(o.policyPath())
	if err != nil {
		return nil, &contractError{contract, err}
	}
	return &gitlab.Driver{
		Policy:   policy,
		StateDir: g.stateDir,
		Contract: contract,
		Getenv:   os.Getenv,
		Version:  version,
		Logger:   log,
		Stdout:   os.Stdout,
		Open: func(ctx context.Context, runID string) (gitlab.Backend, error) {
			g := *g
			if policy.Runtime != "" && g.forceRuntime == "" {
				g.forceRuntime = policy.Runtime // the administrator's choice
			}
			e, err := newExecutor(ctx, &g, log, runID)
			if err != nil {
				return nil, err // not a typed nil in the interface
			}
			return e, nil
		},
	}, nil
}

// contractError is a failure before the driver exists: always a system
// failure, with the runner's code for it.
type contractError struct {
	c   gitlab.Contract
	err error
}

func (e *contractError) Error() string { return e.err.Error() }

func contractExit(err error) error {
	var ce *contractError
	if errors.As(err, &ce) {
		return &exitError{code: ce.c.SystemFailureExitCode, err: ce.err}
	}
	return systemFailure(err)
}

func driverExit(d *gitlab.Driver, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: d.Contract.ExitCode(err), err: err}
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
