package gitlab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/cleanroom-ci/cleanroom/runner"
	"github.com/cleanroom-ci/cleanroom/sandbox"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
)

// Run answers run_exec for one stage: the script runs in a fresh sandbox
// chosen by Route, with the job's builds directory mounted where the
// runner expects it. sigs delivers SIGTERM/SIGINT sent to the driver: the
// stage gets SIGTERM, and SIGKILL after the policy's stop_grace.
func (d *Driver) Run(ctx context.Context, scriptPath, stage string, sigs <-chan os.Signal) error {
	if !validStageName(stage) {
		return fmt.Errorf("run: unexpected stage name %q", stage)
	}
	resp, err := ReadResponse(d.Contract.JobResponseFile)
	if err != nil {
		return err
	}
	log := d.log().With("job", resp.ID, "stage", stage)
	job, err := openJob(d.StateDir, resp.ID, false, lockWaitRun)
	if err != nil {
		return err
	}
	defer job.close()
	st, err := job.readState()
	if err != nil {
		return err
	}
	kind := Route(stage)

	args, hostScript, err := d.stageScript(job, resp, scriptPath, stage, kind)
	if err != nil {
		return err
	}
	defer os.Remove(hostScript)

	lock, backend, err := d.openBackend(ctx, log)
	if err != nil {
		return err
	}
	defer lock.Release()
	defer backend.Close()

	var provErr error
	if IsProvenancePoint(stage) {
		if err := d.provenanceIfDue(ctx, backend, job, st, resp); err != nil {
			provErr = buildErrorf("provenance: %v", err)
			// cleanup_file_variables removes the job's secrets from the
			// builds directory: it runs even so, and the job still fails.
			if stage != StageCleanupFileVariables {
				return provErr
			}
		}
	}

	events, err := os.OpenFile(job.file(egressFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer events.Close()
	// The stage's egress log feeds its provenance: credentials in URLs (a
	// token in a clone URL's userinfo, a presigned cache URL's signature)
	// and the job's secret values are removed before it is written.
	rec := runner.RedactingRecorder(egress.NewJSONLRecorder(events), resp.MaskedValues(d.Policy.RunnerOnly))

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	step := d.stageStep(st, stage, kind, args, hostScript, lock.ID)
	step.Services = stageServices(job, st, stage, kind, d.Policy) // services.go
	// gitlab-runner reads the stage's output from a pipe: when it is gone
	// (killed, crashed), nobody will ever read the job log again, and the
	// stage is stopped rather than left running until its deadline.
	step.Output = &runnerGoneWriter{w: step.Output, gone: func() {
		log.Warn("the job log's reader (gitlab-runner) is gone; stopping the stage")
		cancel()
	}}
	if m, err := provenanceMount(job, st); err != nil {
		return buildErrorf("stage %s not run: %v", stage, err)
	} else if m != nil {
		step.Mounts = append(step.Mounts, *m)
	}
	if touchesRepository(stage) {
		if err := clearAfterJobStages(job, st); err != nil {
			return err
		}
	}
	rec0 := StageRecord{Stage: stage, Kind: kind, Image: step.Image.Ref, Digest: step.Image.Digest, Allow: step.Allow, Status: "running", Started: d.timeNow().UTC()}
	if err := job.appendStage(rec0); err != nil {
		return err
	}

	done := make(chan struct{})
	defer close(done)
	go d.forwardSignals(sigs, done, cancel, backend, step.ID, log)

	run := d.sandboxed
	if run == nil {
		run = runner.Sandboxed
	}
	sr, runErr := run(runCtx, runner.SandboxEnv{
		Executor:      backend,
		StateDir:      d.StateDir,
		Logger:        log,
		Recorder:      rec,
		GoModUpstream: d.goModUpstream(kind),
	}, step)

	final := rec0
	final.Finished = d.timeNow().UTC()
	final.ExitCode = sr.ExitCode
	final.Denials = sr.Denials
	final.Status = sr.Status
	switch {
	case errors.Is(runErr, runner.ErrCancelled):
		final.Status = "cancelled"
	case runErr != nil:
		final.Status = "error"
	}
	if err := job.appendStage(final); err != nil {
		log.Warn("cannot record the stage's outcome", "error", err)
	}
	d.reportDenials(stage, kind, sr.Denials)
	return d.stageOutcome(stage, kind, st, sr, runErr, provErr)
}

// stageScript reads the runner's script for a stage, rewrites it for the
// sandbox it runs in (RewriteScript, or RewriteHelperScript for a stage
// that can reach GitLab) and stores it for mounting; it returns the argv
// that runs it and the stored file.
func (d *Driver) stageScript(job *jobDir, resp *Response, scriptPath, stage string, kind Kind) ([]string, string, error) {
	script, err := readScript(scriptPath)
	if err != nil {
		return nil, "", err
	}
	var secretValues []string
	for _, v := range resp.Secrets(d.Policy.RunnerOnly) {
		secretValues = append(secretValues, v.Value)
	}
	var rewritten string
	if kind == KindUser {
		rewritten, err = RewriteScript(string(script), d.Policy.RunnerOnly, secretValues)
	} else {
		rewritten, err = RewriteHelperScript(string(script), helperDroppedKeys(resp, d.Policy.RunnerOnly), secretValues)
	}
	if err != nil {
		return nil, "", buildErrorf("stage %s not run: %v", stage, err)
	}
	args, err := ShellArgs(script, stageScriptPath)
	if err != nil {
		return nil, "", err
	}
	hostScript, err := writeStageScript(job, stage, rewritten)
	if err != nil {
		return nil, "", err
	}
	return args, hostScript, nil
}

// stageOutcome maps how a stage ended onto the contract (see ExitCode).
func (d *Driver) stageOutcome(stage string, kind Kind, st *JobState, sr runner.StepResult, runErr, provErr error) error {
	switch {
	case errors.Is(runErr, runner.ErrCancelled):
		return buildErrorf("stage %s was cancelled", stage)
	case runErr != nil:
		return runErr
	}
	if provErr != nil {
		return provErr
	}
	switch sr.Status {
	case "ok":
		return nil
	case "oom":
		code := sr.ExitCode
		if code <= 0 {
			code = 137
		}
		return &BuildError{ExitCode: code, Err: fmt.Errorf("stage %s was killed: out of memory (limit %d bytes)", stage, d.Policy.MemoryBytes)}
	case "timeout":
		return &BuildError{ExitCode: sr.ExitCode, Err: fmt.Errorf("stage %s ran past the job's deadline and was killed", stage)}
	}
	if kind != KindUser && (sr.ExitCode == 126 || sr.ExitCode == 127) {
		// No job code runs in a helper stage: a command that cannot be
		// found or run there is the helper image's fault, and a system
		// failure lets GitLab retry the job.
		return fmt.Errorf("stage %s: the helper image %s cannot run the stage's commands (exit %d: not found or not executable); check helper.image (it needs bash or sh, git and CA certificates) and helper.gitlab_runner", stage, st.Helper.Ref, sr.ExitCode)
	}
	return &BuildError{ExitCode: sr.ExitCode}
}

// reportDenials tells the job log what the stage's proxy refused, and
// how a job could be allowed it (only a job stage's egress can be widened
// by the job, and only within the policy's egress.maximum).
func (d *Driver) reportDenials(stage string, kind Kind, denials []egress.Denial) {
	for _, den := range denials {
		target := den.Target
		if target == "" {
			target = "(malformed request)"
		}
		msg := fmt.Sprintf("cleanroom: egress denied in %s: %s (%d×): %s", stage, target, den.Count, den.Reason)
		if den.Hint != "" {
			if kind == KindUser {
				msg += fmt.Sprintf("; allow with CLEANROOM_EGRESS_ALLOW=%q if the runner's egress.maximum covers it, or in egress.default", den.Hint)
			} else {
				msg += fmt.Sprintf("; allow with %q in the policy's helper.allow", den.Hint)
			}
		}
		fmt.Fprintln(d.stdout(), msg)
	}
}

// runnerGoneWriter passes output on until a write fails with EPIPE (the
// reader is gone), then calls gone once and discards the rest.
type runnerGoneWriter struct {
	w    io.Writer
	once sync.Once
	gone func()
	dead atomic.Bool
}

func (r *runnerGoneWriter) Write(p []byte) (int, error) {
	if r.dead.Load() {
		return len(p), nil
	}
	if _, err := r.w.Write(p); err != nil && errors.Is(err, syscall.EPIPE) {
		r.dead.Store(true)
		r.once.Do(r.gone)
	}
	return len(p), nil
}

// forwardSignals turns the runner's SIGTERM into the stage's: the stage's
// processes get SIGTERM (GitLab's scripts trap it and exit), and whatever
// is left is killed after the grace period by cancelling the run, which
// also tears the sandbox down. The containerd task is not in the driver's
// process group, so without this the runner's signal would never reach it.
func (d *Driver) forwardSignals(sigs <-chan os.Signal, done <-chan struct{}, cancel func(), b Backend, id string, log hclog.Logger) {
	var sig os.Signal
	select {
	case <-done:
		return
	case sig = <-sigs:
	}
	grace := d.Policy.StopGrace
	log.Warn("stopping the stage", "signal", sig, "grace", grace)
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	err := b.Signal(sctx, id, syscall.SIGTERM)
	scancel()
	if err != nil || grace <= 0 {
		// Nothing started yet, or it is already gone: nothing to be
		// graceful to.
		cancel()
		return
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		log.Warn("the stage did not stop within the grace period; killing it")
		cancel()
	case <-sigs:
		cancel()
	}
}

// goModUpstream is the module proxy behind the GOPROXY endpoint of user
// stages (helpers fetch nothing of the kind).
func (d *Driver) goModUpstream(kind Kind) *url.URL {
	if kind != KindUser {
		return nil
	}
	return d.Policy.GoProxyUpstream
}

// stageStep describes the sandbox of one stage.
func (d *Driver) stageStep(st *JobState, stage string, kind Kind, args []string, hostScript, runID string) runner.SandboxedStep {
	p := d.Policy
	img, allow := st.Image, st.Allow
	mounts := []sandbox.Mount{{Source: hostScript, Destination: stageScriptPath, ReadOnly: true}}
	switch kind {
	case KindHelper, KindHelperOffline:
		img = st.Helper
		allow = st.HelperAllow
		if kind == KindHelperOffline {
			allow = []string{}
		}
		// The cache is only ever touched by the helper: user code sees
		// what the helper extracted into the builds directory, never the
		// project's cache store itself.
		mounts = append(mounts, sandbox.Mount{Source: st.CacheDir, Destination: st.CacheDir})
		if p.GitLabRunner != "" {
			mounts = append(mounts, sandbox.Mount{Source: p.GitLabRunner, Destination: gitlabRunnerPath, ReadOnly: true})
		}
	}
	timeout := time.Until(st.Deadline)
	if timeout < time.Minute {
		timeout = time.Minute
	}
	var env []string
	var attach func(sandbox.Network, string) (io.Closer, error)
	if kind != KindUser {
		env = helperGitEnv
	}
	if kind == KindHelper {
		if targets := loopbackTargets(allow); len(targets) > 0 {
			attach = attachRelay(targets)
		}
	}
	return runner.SandboxedStep{
		Name:         stage,
		ID:           sandboxID(runID, st.JobID, stage),
		Image:        sandbox.Image{Ref: img.Ref, Name: img.Name, Digest: img.Digest},
		Args:         args,
		Env:          env,
		Allow:        append([]string{}, allow...),
		Workspace:    st.BuildsDir,
		WorkspaceDir: st.BuildsDir,
		Mounts:       mounts,
		Limits: sandbox.Limits{
			MemoryBytes: p.MemoryBytes,
			CPUs:        p.CPUs,
			Pids:        p.Pids,
			TmpBytes:    p.TmpBytes,
		},
		Timeout: timeout,
		Output:  d.stdout(),
		Attach:  attach,
	}
}

// sandboxID is the container and namespace id of a stage: it starts with
// cr-<run id>- so that a later call reaps it if this one dies, and fits
// containerd's identifier rules (76 characters, no repeated separators).
func sandboxID(runID string, jobID int64, stage string) string {
	prefix := fmt.Sprintf("cr-%s-gl%d-", runID, jobID)
	var b strings.Builder
	lastSep := true
	for _, c := range stage {
		sep := c == '_' || c == '-' || c == '.'
		if sep && lastSep {
			continue
		}
		b.WriteRune(c)
		lastSep = sep
	}
	s := b.String()
	if room := 76 - len(prefix); len(s) > room {
		s = s[:max(room, 1)]
	}
	s = strings.TrimRight(s, "_-.")
	if s == "" {
		s = "stage"
	}
	return prefix + s
}

func readScript(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("stage script: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxScriptSize+1))
	if err != nil {
		return nil, fmt.Errorf("stage script: %w", err)
	}
	if len(b) > maxScriptSize {
		return nil, fmt.Errorf("stage script %s is larger than %d bytes", p, maxScriptSize)
	}
	return b, nil
}

// writeStageScript stores the rewritten script in the job's state
// directory (closed to host users: it still carries the job token) as a
// file the sandbox's user can read.
func writeStageScript(job *jobDir, stage, script string) (string, error) {
	dir := job.file(scriptsDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, stage+"-*.sh")
	if err != nil {
		return "", err
	}
	if _, err := f.WriteString(script); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), f.Close()
}
