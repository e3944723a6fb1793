package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cleanroom-ci/cleanroom/internal/exitcode"
	"github.com/cleanroom-ci/cleanroom/internal/runlock"
	"github.com/cleanroom-ci/cleanroom/internal/toolcache"
	"github.com/cleanroom-ci/cleanroom/runner"
	"github.com/cleanroom-ci/cleanroom/runner/manifest"
	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
	"github.com/cleanroom-ci/cleanroom/runner/rebuild"
	"github.com/cleanroom-ci/cleanroom/sandbox"
	ctrexec "github.com/cleanroom-ci/cleanroom/sandbox/containerd"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
)

type runOptions struct {
	file       string
	workdir    string
	out        string
	steps      []string
	allow      []string
	egressMode string
	goproxy    string
	output     string
	builderID  string
	trace      string
	runtime    string
	secrets    []string
	sign       signOptions
	lint       lintOptions
	materials  materialsOptions // materials.go
	// Workspace and caps (see runner.Config).
	reuseWorkspace    bool
	workspaceSize     string
	logLimit          string
	artifactSizeLimit string
	requireInspection []string
	// Reproducibility (rebuild.go): --check N, the rebuild command's
	// options, SOURCE_DATE_EPOCH, and the rebuild's report once made.
	check           int
	checkVary       []string
	rebuild         *rebuildOptions
	sourceDateEpoch *int64
	sdeFlag         string
	flags           *pflag.FlagSet
	rebuildReport   *rebuild.Report
}

func newRunCommand(g *globalOptions) *cobra.Command {
	o := &runOptions{}
	return runCommand(g, o, &cobra.Command{
		Use:   "run [flags]",
		Short: "Run a pipeline's steps, each in a fresh hermetic sandbox",
		Long: `Run executes the steps of a pipeline file in order. Each step runs as
/bin/sh -e -c '<run>' in a fresh sandbox of its image with the workspace
mounted read-write at /workspace. The only network a step has is the egress
proxy on its loopback (HTTP_PROXY, HTTPS_PROXY and GOPROXY point at it); the
proxy allows what egress.allow and --allow name and denies the rest.

Outputs go to --out (default <workspace>/.cleanroom): logs/<step>.log,
egress.jsonl (every egress decision), summary.json and provenance.intoto.json
(an in-toto statement with a SLSA v1 provenance predicate: source, pipeline,
images by digest, every dependency fetched with its sha256, and the
artifacts matched by the pipeline's "artifacts" globs).`,
		Example: `  # run every step of ./cleanroom.yaml
  cleanroom run

  # run one step of another pipeline, with an extra egress rule
  cleanroom run -f ci/cleanroom.yaml --step build --allow deps.example.org

  # find the allowlist a build needs: allow unlisted hosts, record what enforce would deny
  cleanroom run --egress-mode audit`,
	})
}

// runCommand adds the run flags to cmd (run, or rebuild when o.rebuild is
// set) and runs the pipeline.
func runCommand(g *globalOptions, o *runOptions, cmd *cobra.Command) *cobra.Command {
	cmd.Args = cobra.NoArgs
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if o.output != "text" && o.output != "json" {
			return systemFailure(fmt.Errorf("--output %q: use text or json", o.output))
		}
		// The result is printed after the run has cleaned up, so a
		// reader that goes away early cannot cut the teardown short.
		res, err := runPipeline(cmd.Context(), g, o)
		if o.rebuildReport != nil {
			printRebuild(cmd.OutOrStdout(), o, res) // rebuild.go
			return err
		}
		if o.output == "json" {
			printRunJSON(cmd.OutOrStdout(), res, err)
		} else if res != nil {
			report(cmd.OutOrStdout(), res)
		}
		return err
	}
	f := cmd.Flags()
	o.flags = f
	f.StringVarP(&o.file, "file", "f", "cleanroom.yaml", "pipeline file")
	f.StringVar(&o.workdir, "workdir", "", "workspace mounted at /workspace (default: the pipeline file's directory)")
	f.StringVar(&o.out, "out", "", "output directory (default: <workspace>/.cleanroom)")
	f.StringArrayVar(&o.steps, "step", nil, "run only this step (repeatable)")
	f.StringArrayVar(&o.allow, "allow", nil, "extra egress rule for every step, e.g. deps.example.org or 10.0.0.5:8080 (repeatable)")
	f.StringVar(&o.egressMode, "egress-mode", "", "enforce (deny what is not allowed) or audit (also allow hosts not on the allowlist and record them; special addresses, smuggling and SNI mismatches stay denied); default: the pipeline's")
	f.StringVar(&o.goproxy, "goproxy-upstream", "", "module proxy `URL` behind the steps' GOPROXY endpoint (default: the first proxy in \"go env GOPROXY\"); its host must be allowed")
	f.StringVarP(&o.output, "output", "o", "text", "result format on stdout: text or json")
	f.StringArrayVar(&o.secrets, "secret", nil, "pass this variable from cleanroom's own environment to every step; its value is masked in logs and never recorded (repeatable)")
	f.BoolVar(&o.reuseWorkspace, "reuse-workspace", false, "run the steps in the workspace directory itself instead of a fresh copy (fast incremental builds; files of earlier runs are visible, and the provenance records the workspace as reused, which `verify --policy` with freshWorkspace refuses)")
	f.StringVar(&o.workspaceSize, "workspace-size", "8GiB", "size of the fresh workspace's filesystem: a step writing more gets ENOSPC; \"none\" for no limit")
	f.StringVar(&o.logLimit, "log-limit", "64MiB", "cap on each step's log file; beyond it the output is truncated with a marker; \"none\" for no cap")
	f.StringVar(&o.artifactSizeLimit, "artifact-size-limit", "2GiB", "largest artifact the run hashes and signs; a larger one fails the run; \"none\" for no cap")
	f.StringArrayVar(&o.requireInspection, "require-inspection", nil, "inspect the TLS of every step whose egress.allow (or --allow) has a rule reaching a host and port of this one (in any spelling, or a wildcard above it), so a Host inside the tunnel that is not the rule's host is refused (against domain fronting) (repeatable)")
	o.addReproFlags(f) // rebuild.go
	o.lint.addFlags(cmd, false)
	o.sign.addFlags(cmd)
	o.materials.addFlags(f)
	f.StringVar(&o.runtime, "runtime", "", "OCI runtime of the steps: runc, crun or runsc (gVisor); default: the pipeline's runtime, else runc")
	f.StringVar(&o.trace, "trace", "", "write timed spans of the run (JSON lines) to this file")
	f.StringVar(&o.builderID, "builder-id", manifest.DefaultBuilderID, "runDetails.builder.id written into the provenance: who ran the build")
	return cmd
}

// runPipeline runs the pipeline and returns its result (nil when the run
// did not start) and an *exitError when it did not succeed. It is long on
// purpose: the checks that need no root or daemon come first, in the order
// a user fixes them, then the run's lifecycle; split up, that order would
// be harder to see.
func runPipeline(ctx context.Context, g *globalOptions, o *runOptions) (*runner.Result, error) {
	log, err := g.logger()
	if err != nil {
		return nil, systemFailure(err)
	}
	if err := o.applyRecordedFlags(log); err != nil { // rebuild.go
		return nil, systemFailure(err)
	}
	p, err := pipeline.Load(o.file, pipeline.WithRuleCheck(checkRule))
	if err != nil {
		return nil, systemFailure(err)
	}
	for _, r := range o.allow {
		if err := checkRule(r); err != nil {
			return nil, systemFailure(fmt.Errorf("--allow %q: %w", r, err))
		}
	}
	for _, r := range o.requireInspection {
		if err := checkRule(r); err != nil {
			return nil, systemFailure(fmt.Errorf("--require-inspection %q: %w", r, err))
		}
	}
	if _, err := p.Select(o.steps); err != nil {
		return nil, systemFailure(err)
	}
	o.lint.egressMode, o.lint.allow = o.egressMode, o.allow
	lo, err := o.lint.lintOpts()
	if err != nil {
		return nil, systemFailure(err)
	}
	findings := pipeline.Lint(p, lo)
	for _, f := range findings {
		log.Warn("lint: "+f.Message, "id", f.ID, "at", fmt.Sprintf("%s:%d:%d", f.File, f.Line, f.Column), "fix", f.Fix, "docs", f.DocURL)
	}
	if o.lint.strict && len(findings) > 0 {
		return nil, systemFailure(fmt.Errorf("%d lint warning(s) with --strict; see `cleanroom lint`", len(findings)))
	}
	workspace := o.workdir
	if workspace == "" {
		workspace = p.Dir
	}
	if workspace, err = filepath.Abs(workspace); err != nil {
		return nil, systemFailure(err)
	}
	if fi, err := os.Stat(workspace); err != nil || !fi.IsDir() {
		return nil, systemFailure(fmt.Errorf("workspace %s is not a directory", workspace))
	}
	out := o.out
	defaultOut := filepath.Join(workspace, ".cleanroom")
	if o.rebuild != nil {
		defaultOut = filepath.Join(defaultOut, "rebuild")
	}
	if out == "" {
		out = defaultOut
	}
	if out, err = filepath.Abs(out); err != nil {
		return nil, systemFailure(err)
	}
	if msg := keyInWorkspace(o.sign.key, workspace); msg != "" {
		if o.lint.strict {
			return nil, systemFailure(errors.New(msg + " (refused with --strict)"))
		}
		log.Warn(msg)
	}
	// Inside the workspace only the default is accepted: it is excluded
	// from the fresh copy, masked in a reused workspace and opened without
	// following a symlink. Any other directory there is the steps' to shape.
	if rel, err := filepath.Rel(workspace, out); err == nil && out != defaultOut && !strings.HasPrefix(rel, "..") {
		return nil, systemFailure(fmt.Errorf("--out %s is inside the workspace %s: use a directory outside it, or the default (%s)", out, workspace, defaultOut))
	}
	// A missing image archive is found before the run starts; the earlier
	// run's outputs go all the same, so the output directory never shows
	// them as this run's.
	if err := pipeline.CheckArchives(p, o.steps); err != nil {
		if cerr := runner.ClearOutputs(workspace, out); cerr != nil {
			log.Warn("clear the earlier run's outputs", "error", cerr)
		}
		return nil, systemFailure(err)
	}
	sizes := map[string]*int64{}
	var wsSize, logLimit, artLimit int64
	sizes["--workspace-size"], sizes["--log-limit"], sizes["--artifact-size-limit"] = &wsSize, &logLimit, &artLimit
	for flag, raw := range map[string]string{"--workspace-size": o.workspaceSize, "--log-limit": o.logLimit, "--artifact-size-limit": o.artifactSizeLimit} {
		if raw == "none" {
			*sizes[flag] = -1
			continue
		}
		n, err := pipeline.ParseSize(raw)
		if err != nil || n <= 0 {
			return nil, systemFailure(fmt.Errorf("%s %q: want a size such as 512MiB, or none", flag, raw))
		}
		*sizes[flag] = n
	}
	if err := o.parseRepro(); err != nil { // rebuild.go
		return nil, systemFailure(err)
	}
	signer, err := o.sign.signer(ctx, p, log)
	if err != nil {
		return nil, systemFailure(err)
	}
	secrets, err := secretsFromEnv(o.secrets)
	if err != nil {
		return nil, systemFailure(err)
	}
	if len(secrets) > 0 {
		// Everything the runner logs passes through the same masking as
		// step output: a step can put a secret into a host name it asks for.
		if r, ok := log.(hclog.OutputResettable); ok {
			r.ResetOutput(&hclog.LoggerOptions{Output: runner.MaskingWriter(os.Stderr, secrets), Color: hclog.ColorOff})
		}
	}
	upstream, err := goModUpstream(o.goproxy, toolCacheDir(g.stateDir))
	if err != nil {
		return nil, systemFailure(err)
	}
	mat, err := o.materials.open(log)
	if err != nil {
		return nil, systemFailure(needsRoot("run", err))
	}
	if o.runtime != "" && !ctrexec.ValidRuntime(o.runtime) {
		return nil, systemFailure(fmt.Errorf("--runtime %q: use one of %s", o.runtime, strings.Join(ctrexec.Runtimes, ", ")))
	}
	if os.Geteuid() != 0 {
		return nil, systemFailure(errors.New("cleanroom run needs root: it creates network namespaces and containers (run it with sudo)"))
	}

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var trace sandbox.TraceFunc
	if o.trace != "" {
		sw, err := newSpanWriter(o.trace)
		if err != nil {
			return nil, systemFailure(err)
		}
		defer sw.Close()
		trace = sw.span
	}

	lock, err := runlock.Acquire(runner.LocksDir(g.stateDir))
	if err != nil {
		return nil, systemFailure(err)
	}
	defer lock.Release()
	log = log.With("run", lock.ID)

	// Reaping what crashed runs left (files and mounts under the state
	// directory) needs no containerd, so it overlaps connecting to it.
	reaped := make(chan struct{})
	go func() {
		defer close(reaped)
		runner.Reap(g.stateDir, log)
	}()
	exec, err := newExecutor(ctx, g, log, lock.ID)
	<-reaped
	if err != nil {
		return nil, systemFailure(err)
	}
	defer exec.Close()

	cfg := runner.Config{
		Pipeline:          p,
		Steps:             o.steps,
		Workspace:         workspace,
		ReuseWorkspace:    o.reuseWorkspace,
		WorkspaceSize:     wsSize,
		LogLimit:          logLimit,
		ArtifactSizeLimit: artLimit,
		OutDir:            out,
		StateDir:          g.stateDir,
		RunID:             lock.ID,
		ExtraAllow:        o.allow,
		EgressMode:        o.egressMode,
		Secrets:           secrets,
		Signer:            signer,
		GoModUpstream:     upstream,
		Executor:          exec,
		Runtime:           o.runtime,
		Output:            os.Stderr,
		Logger:            log,
		BuilderID:         o.builderID,
		Trace:             trace,
		Progress:          g.progress(),
		Version:           version,
		Inspect:           o.materials.inspect,
		RequireInspection: o.requireInspection,
		Store:             mat.store,
		CacheMode:         o.materials.cacheMode,
		UpstreamTLS:       mat.upstreamTLS,
		Offline:           o.materials.offline,
		Replay:            mat.replay,
		SourceDateEpoch:   o.sourceDateEpoch,
	}
	if o.rebuild != nil {
		err := runRebuild(ctx, o, cfg, mat) // rebuild.go
		if cerr := exec.Close(); cerr != nil && err == nil {
			err = systemFailure(fmt.Errorf("sandbox teardown: %w", cerr))
		}
		return nil, err
	}
	res, err := runner.Run(ctx, cfg)
	if o.check > 0 && err == nil && res.Failed == "" && (res.Replay == nil || res.Replay.Reproduced) {
		err := runCheck(ctx, o, cfg, res) // rebuild.go
		if cerr := exec.Close(); cerr != nil && err == nil {
			err = systemFailure(fmt.Errorf("sandbox teardown: %w", cerr))
		}
		return res, err
	}
	// Close waits for the background teardown of the last steps; a
	// teardown that failed is an infrastructure failure of this run.
	if cerr := exec.Close(); cerr != nil && err == nil && res != nil && res.Failed == "" {
		return res, systemFailure(fmt.Errorf("sandbox teardown: %w", cerr))
	}
	if rerr := runner.ReleaseNetNSDir(g.stateDir, lock.ID); rerr != nil {
		log.Warn("state directory", "error", rerr)
	}
	switch {
	case errors.Is(err, runner.ErrCancelled) || (err != nil && ctx.Err() != nil):
		return res, systemFailure(errRunCancelled)
	case err != nil:
		return res, systemFailure(err)
	case res.Failed != "":
		return res, buildFailure(nil)
	case res.Replay != nil && !res.Replay.Reproduced:
		return res, buildFailure(fmt.Errorf("the replay did not reproduce the artifacts of %s", res.Replay.Provenance))
	}
	return res, nil
}

var errRunCancelled = errors.New("run cancelled; every sandbox it started has been removed")

func newExecutor(ctx context.Context, g *globalOptions, log hclog.Logger, runID string) (*ctrexec.Executor, error) {
	opts := []ctrexec.Option{
		ctrexec.WithNamespace(g.namespace),
		ctrexec.WithStateDir(g.stateDir),
		ctrexec.WithLogger(log.Named("containerd")),
	}
	if g.address != "" {
		opts = append(opts, ctrexec.WithAddress(g.address))
	}
	if g.noUserNS {
		opts = append(opts, ctrexec.WithoutUserNamespaces())
	}
	if g.forceRuntime != "" {
		opts = append(opts, ctrexec.WithForcedRuntime(g.forceRuntime))
	}
	if runID != "" {
		opts = append(opts, ctrexec.WithRun(runner.LocksDir(g.stateDir), runID))
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return ctrexec.New(cctx, opts...)
}

// checkRule validates an egress rule with the proxy's own grammar. A rule
// written as a URL gets the host to write instead: the grammar's own
// message ("invalid port") would not say what is wrong.
func checkRule(rule string) error {
	if strings.Contains(rule, "://") {
		msg := fmt.Sprintf("egress rule %q is a URL: write the host, not a URL", rule)
		if u, err := url.Parse(strings.TrimSpace(rule)); err == nil && u.Host != "" {
			msg += fmt.Sprintf(" (%q)", u.Host)
		}
		return errors.New(msg)
	}
	_, err := egress.ParseRule(rule)
	return err
}

// goModUpstream picks the module proxy that the steps' GOPROXY endpoint
// forwards to: the flag, or the first proxy URL in the host's `go env
// GOPROXY`. None (no Go on the host, or GOPROXY=direct/off) disables the
// endpoint.
//
// `go env` is asked once per Go installation and configuration (its answer
// is kept under the state directory, see internal/toolcache), not on every
// start: it costs a process start-up, about 20 ms.
func goModUpstream(flag, cacheDir string) (*url.URL, error) {
	raw := flag
	if raw == "" {
		// $GOPROXY first: it is what `go env` would report, without
		// starting a process.
		list := os.Getenv("GOPROXY")
		if list == "" {
			b, err := toolcache.Output(cacheDir, "go", []string{"env", "GOPROXY"}, goEnvFile())
			if err != nil {
				return nil, nil
			}
			list = string(b)
		}
		for _, e := range strings.FieldsFunc(strings.TrimSpace(list), func(r rune) bool { return r == ',' || r == '|' }) {
			if e != "direct" && e != "off" {
				raw = e
				break
			}
		}
		if raw == "" {
			return nil, nil
		}
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--goproxy-upstream %q: want an http(s) URL", raw)
	}
	return u, nil
}

// runJSON is what `run --output json` prints on stdout, whatever the
// outcome: the status and exit code first, then the result (absent when
// the run did not start, e.g. a configuration error).
type runJSON struct {
	// Status is ok (exit 0), failed (exit 1: a step failed or the replay
	// did not reproduce the artifacts), cancelled or error (exit 2).
	Status   string `json:"status"`
	ExitCode int    `json:"exitCode"`
	// Error says why the run did not succeed; it shadows Result.Error,
	// which it includes.
	Error string `json:"error,omitempty"`
	*runner.Result
}

// goEnvFile is the file `go env -w` writes, on which `go env`'s answer
// depends besides the toolchain itself.
func goEnvFile() string {
	if f := os.Getenv("GOENV"); f != "" {
		return f
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "go", "env")
}

// toolCacheDir is where the answers of host tools are kept between runs.
func toolCacheDir(stateDir string) string { return filepath.Join(stateDir, "toolcache") }

func runOutcome(res *runner.Result, err error) runJSON {
	out := runJSON{Status: "ok", Result: res}
	if res != nil {
		out.Error = res.Error
	}
	if err == nil {
		return out
	}
	out.Status, out.ExitCode = "error", exitcode.SystemFailure
	var ee *exitError
	if errors.As(err, &ee) {
		out.ExitCode = ee.code
		if ee.code == exitcode.BuildFailure {
			out.Status = "failed"
		}
		if errors.Is(ee.err, errRunCancelled) {
			out.Status = "cancelled"
		}
		if ee.err != nil {
			out.Error = ee.err.Error()
		}
	}
	if out.Error == "" && res != nil && res.Failed != "" {
		out.Error = fmt.Sprintf("step %s failed", res.Failed)
	}
	return out
}

func printRunJSON(w io.Writer, res *runner.Result, err error) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(runOutcome(res, err))
}

func report(w io.Writer, res *runner.Result) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STEP\tSTATUS\tEXIT\tDURATION\tDENIED")
	for _, s := range res.Steps {
		denied := 0
		for _, d := range s.Denials {
			denied += d.Count
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\n", s.Name, s.Status, s.ExitCode, formatDuration(s.DurationS), denied)
	}
	tw.Flush()
	for _, s := range res.Steps {
		for _, d := range s.Denials {
			hint := ""
			if d.Hint != "" {
				hint = fmt.Sprintf(" (allow with %q)", d.Hint)
			}
			target := d.Target
			if target == "" {
				target = "(no destination: malformed request)"
			}
			fmt.Fprintf(w, "denied egress in step %s: %s ×%d: %s%s\n", s.Name, target, d.Count, d.Reason, hint)
		}
	}
	reportAuditAllowlist(w, res)
	if res.Error != "" {
		fmt.Fprintf(w, "error: %s\n", res.Error)
	}
	for _, a := range res.Subjects {
		fmt.Fprintf(w, "artifact: %q sha256:%s\n", a.Name, a.SHA256) // quoted: a name can hold a newline
	}
	reportMaterials(w, res) // materials.go
	for _, b := range res.Bundles {
		fmt.Fprintf(w, "signed: %s\n", b)
	}
	if res.Provenance != "" {
		fmt.Fprintf(w, "provenance: %s\n", res.Provenance)
	}
	fmt.Fprintf(w, "outputs: %s\n", res.OutDir)
}

// formatDuration shows a step's duration: milliseconds under a tenth of a
// second (where "0.0s" would hide it), else seconds with one decimal.
func formatDuration(seconds float64) string {
	if seconds < 0.1 {
		return fmt.Sprintf("%dms", int(seconds*1000+0.5))
	}
	return fmt.Sprintf("%.1fs", seconds)
}

// auditRule is one entry of the allowlist an audit run found.
type auditRule struct {
	rule    string
	steps   []string
	special bool // a special address: only this explicit IP rule allows it
}

// auditAllowlist gathers, over every step that ran in audit mode, the
// rules it would have needed under enforce: the hosts audit let through,
// and the special addresses that stayed denied (loopback, private,
// link-local…: names never reach them, only an IP/CIDR rule does; in audit
// mode any other IP is let through, so a denied IP is a special one).
func auditAllowlist(res *runner.Result) []auditRule {
	byRule := map[string]*auditRule{}
	var order []string
	add := func(rule, step string, special bool) {
		r, ok := byRule[rule]
		if !ok {
			r = &auditRule{rule: rule, special: special}
			byRule[rule] = r
			order = append(order, rule)
		}
		if len(r.steps) == 0 || r.steps[len(r.steps)-1] != step {
			r.steps = append(r.steps, step)
		}
	}
	for _, s := range res.Steps {
		if s.Mode != pipeline.EgressAudit {
			continue
		}
		for _, h := range s.WouldNeed {
			add(h, s.Name, false)
		}
		for _, d := range s.Denials {
			if d.Hint == "" {
				continue
			}
			host, _ := splitRuleHost(d.Hint)
			if _, err := netip.ParseAddr(host); err == nil {
				add(d.Hint, s.Name, true)
			}
		}
	}
	out := make([]auditRule, 0, len(order))
	for _, r := range order {
		out = append(out, *byRule[r])
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].special != out[j].special {
			return !out[i].special
		}
		return out[i].rule < out[j].rule
	})
	return out
}

// splitRuleHost is the host part of a "host:port" or "[v6]:port" hint.
func splitRuleHost(rule string) (string, string) {
	if h, p, err := net.SplitHostPort(rule); err == nil {
		return h, p
	}
	return rule, ""
}

// reportAuditAllowlist prints, once at the end, the allowlist an audit run
// found, ready to paste into egress.allow.
func reportAuditAllowlist(w io.Writer, res *runner.Result) {
	rules := auditAllowlist(res)
	if len(rules) == 0 {
		return
	}
	fmt.Fprintln(w, "audit: the egress.allow this run needs under enforce (paste into cleanroom.yaml):")
	fmt.Fprintln(w, "egress:")
	fmt.Fprintln(w, "  allow:")
	for _, r := range rules {
		note := "steps: " + strings.Join(r.steps, ", ")
		if r.special {
			note = "special address, denied even in audit mode: only this explicit IP rule allows it; " + note
		}
		fmt.Fprintf(w, "    - %q  # %s\n", r.rule, note)
	}
}

func quoteList(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// secretsFromEnv reads the --secret variables from cleanroom's environment.
// Only named variables reach a step: the runner's environment as a whole
// never does.
func secretsFromEnv(names []string) (map[string]string, error) {
	out := map[string]string{}
	for _, n := range names {
		if !envNameRE.MatchString(n) {
			return nil, fmt.Errorf("--secret %q: not a variable name", n)
		}
		if pipeline.ReservedEnv(n) {
			return nil, fmt.Errorf("--secret %s: the runner sets this variable itself", n)
		}
		v, ok := os.LookupEnv(n)
		if !ok {
			return nil, fmt.Errorf("--secret %s: not set in cleanroom's environment", n)
		}
		if len(v) < 4 {
			return nil, fmt.Errorf("--secret %s: value shorter than 4 characters cannot be masked reliably", n)
		}
		out[n] = v
	}
	return out, nil
}
