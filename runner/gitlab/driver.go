package gitlab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/cleanroom-ci/cleanroom/internal/runlock"
	"github.com/cleanroom-ci/cleanroom/runner"
	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
	"github.com/cleanroom-ci/cleanroom/sandbox"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
	"github.com/cleanroom-ci/cleanroom/sandbox/netns"
)

// Backend is the sandbox backend of one driver call: the executor, plus
// the two operations the GitLab contract needs beyond it.
type Backend interface {
	sandbox.Executor
	// Pull resolves a registry image, always asking the registry (with
	// the credentials auth gives for a host, if any), and returns it under
	// a name pinned to its digest. Asking every time means a job cannot
	// use a private image another job pulled without holding credentials
	// for it; pinning means a tag moved by a later pull cannot change
	// what this job runs between its stages.
	Pull(ctx context.Context, ref string, auth func(host string) (user, secret string, err error)) (sandbox.Image, error)
	// Signal sends sig to every process of the running sandbox id.
	Signal(ctx context.Context, id string, sig syscall.Signal) error
}

// Contract is what gitlab-runner passes to every driver call in its
// environment.
type Contract struct {
	BuildFailureExitCode  int
	SystemFailureExitCode int
	BuildExitCodeFile     string
	JobResponseFile       string
}

// ContractFromEnv reads the contract variables; the exit codes default to
// the runner's own values (1 and 2) when unset or invalid.
func ContractFromEnv(getenv func(string) string) Contract {
	code := func(k string, def int) int {
		n, err := strconv.Atoi(strings.TrimSpace(getenv(k)))
		if err != nil || n < 0 || n > 255 {
			return def
		}
		return n
	}
	return Contract{
		BuildFailureExitCode:  code("BUILD_FAILURE_EXIT_CODE", 1),
		SystemFailureExitCode: code("SYSTEM_FAILURE_EXIT_CODE", 2),
		BuildExitCodeFile:     getenv("BUILD_EXIT_CODE_FILE"),
		JobResponseFile:       getenv("JOB_RESPONSE_FILE"),
	}
}

// BuildError is a failure that is the job's: its script exited non-zero,
// or it asked for something the policy refuses. gitlab-runner does not
// retry these. ExitCode, when positive, is the script's own exit status.
type BuildError struct {
	ExitCode int
	Err      error
}

func (e *BuildError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("the stage script exited with status %d", e.ExitCode)
	}
	return e.Err.Error()
}

func (e *BuildError) Unwrap() error { return e.Err }

func buildErrorf(format string, args ...any) error {
	return &BuildError{Err: fmt.Errorf(format, args...)}
}

// ExitCode maps the result of a driver call onto the contract: nil is 0;
// a BuildError is $BUILD_FAILURE_EXIT_CODE, with the script's own exit
// status written to $BUILD_EXIT_CODE_FILE (what allow_failure:exit_codes
// reads); anything else is ours or the configuration's,
// $SYSTEM_FAILURE_EXIT_CODE.
func (c Contract) ExitCode(err error) int {
	if err == nil {
		return 0
	}
	var be *BuildError
	if errors.As(err, &be) {
		if be.ExitCode > 0 && c.BuildExitCodeFile != "" {
			os.WriteFile(c.BuildExitCodeFile, []byte(strconv.Itoa(be.ExitCode)+"\n"), 0o644)
		}
		return c.BuildFailureExitCode
	}
	return c.SystemFailureExitCode
}

// Driver carries out the four custom-executor calls. Every field is a
// plain input set by the command that wires it up.
type Driver struct {
	Policy   *Policy
	StateDir string
	Contract Contract
	// Getenv reads the call's environment (only the CUSTOM_ENV_ hints
	// that are validated before use).
	Getenv  func(string) string
	Version string
	Logger  hclog.Logger
	// Stdout is the job log for prepare and run: stage output streams
	// there live (the driver's own messages go to Logger).
	Stdout io.Writer
	// Open connects to the sandbox backend for a call holding run lock
	// runID; it reaps what dead runs left behind (see internal/runlock).
	Open func(ctx context.Context, runID string) (Backend, error)

	// sandboxed runs one stage; tests replace it.
	sandboxed func(context.Context, runner.SandboxEnv, runner.SandboxedStep) (runner.StepResult, error)
	now       func() time.Time
}

func (d *Driver) log() hclog.Logger {
	if d.Logger == nil {
		return hclog.NewNullLogger()
	}
	return d.Logger
}

func (d *Driver) timeNow() time.Time {
	if d.now != nil {
		return d.now()
	}
	return time.Now()
}

func (d *Driver) getenv(k string) string {
	if d.Getenv == nil {
		return ""
	}
	return d.Getenv(k)
}

func (d *Driver) stdout() io.Writer {
	if d.Stdout == nil {
		return io.Discard
	}
	return d.Stdout
}

// Lock waits: how long a call waits for another call of the same job.
const (
	lockWaitRun     = 2 * time.Minute
	lockWaitCleanup = 30 * time.Second
	// deadlineMargin is added to the job timeout before a job's leftovers
	// count as abandoned: after_script, cache and artifact stages run
	// after the job timeout's clock, and a sweep must never race them.
	deadlineMargin = 2 * time.Hour
	// defaultJobTimeout is assumed when the payload has none.
	defaultJobTimeout = time.Hour
	// maxScriptSize bounds a stage script read into memory.
	maxScriptSize = 64 << 20
	// stageScriptPath is where the rewritten script is mounted, read-only.
	stageScriptPath = "/cleanroom/stage-script"
	// gitlabRunnerPath is where helper.gitlab_runner is mounted.
	gitlabRunnerPath = "/usr/local/bin/gitlab-runner"
)

// ConfigOutput is what config_exec prints (see the contract's schema).
type ConfigOutput struct {
	BuildsDir         string            `json:"builds_dir"`
	CacheDir          string            `json:"cache_dir"`
	BuildsDirIsShared bool              `json:"builds_dir_is_shared"`
	Hostname          string            `json:"hostname,omitempty"`
	Driver            DriverInfo        `json:"driver"`
	JobEnv            map[string]string `json:"job_env"`
}

// DriverInfo names the driver in the job log.
type DriverInfo struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// Config answers config_exec: a builds directory and a cache directory of
// the job's own under the admin's roots. builds_dir_is_shared is false:
// no two jobs ever share a builds directory, so nothing one job leaves
// there can reach the next.
func (d *Driver) Config() (*ConfigOutput, error) {
	resp, err := ReadResponse(d.Contract.JobResponseFile)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	return &ConfigOutput{
		BuildsDir:         d.buildsDir(resp),
		CacheDir:          d.cacheDir(resp),
		BuildsDirIsShared: false,
		Hostname:          host,
		Driver:            DriverInfo{Name: "cleanroom", Version: d.Version},
		JobEnv:            map[string]string{},
	}, nil
}

func (d *Driver) buildsDir(r *Response) string {
	return filepath.Join(d.Policy.BuildsDir, strconv.FormatInt(r.ID, 10))
}

// cacheDir is per project: the cache carries files from one job of a
// project to the next, never to another project.
func (d *Driver) cacheDir(r *Response) string {
	return filepath.Join(d.Policy.CacheDir, strconv.FormatInt(r.JobInfo.ProjectID, 10))
}

// Prepare answers prepare_exec: check the job against the policy, make
// its images available, create its directories and record the decisions
// for the later calls. It can run several times for one job (the runner
// retries, with cleanup in between) and starts from scratch each time.
func (d *Driver) Prepare(ctx context.Context) error {
	resp, err := ReadResponse(d.Contract.JobResponseFile)
	if err != nil {
		return err
	}
	log := d.log().With("job", resp.ID)
	p := d.Policy

	image := resp.Image.Name
	if image == "" {
		image = p.DefaultImage
	}
	if image == "" {
		return &BuildError{Err: errNoImage}
	}
	jobImage, err := ImageAllowed(p.AllowedImages, image)
	if err != nil {
		// As GitLab's own Docker and Kubernetes executors do with an
		// image outside allowed_images ("disallowed image"): a system
		// failure, so the job may be retried on another runner.
		return err
	}
	if err := refuseJobFeatures(resp); err != nil {
		return err
	}
	requestedRaw, _ := resp.Var(EgressRequestVariable)
	requested := ParseEgressRequest(requestedRaw)
	allow, err := EffectiveAllow(p, requested)
	if err != nil {
		return &BuildError{Err: err}
	}
	serverURL, _ := resp.Var("CI_SERVER_URL")
	helperAllow := append([]string{}, p.HelperAllow...)
	if serverURL != "" {
		serverRule, err := ServerRule(serverURL)
		if err != nil {
			return err
		}
		helperAllow = append([]string{serverRule}, helperAllow...)
	}
	helperImage, err := parseImage(p.HelperImage)
	if err != nil {
		return err
	}

	job, err := openJob(d.StateDir, resp.ID, true, lockWaitRun)
	if err != nil {
		return err
	}
	defer job.close()
	// A retried prepare starts over: nothing of the failed attempt's
	// records may pass for this one's.
	for _, f := range []string{jobFile, stagesFile, egressFile, provenanceMark} {
		os.Remove(job.file(f))
	}
	os.RemoveAll(job.file(scriptsDir))

	buildsDir, cacheDir := d.buildsDir(resp), d.cacheDir(resp)
	if err := makeJobDirs(p, buildsDir, cacheDir); err != nil {
		return err
	}

	lock, backend, err := d.openBackend(ctx, log)
	if err != nil {
		return err
	}
	defer lock.Release()
	defer backend.Close()

	unlockImages, err := lockImages(d.StateDir, unix.LOCK_SH)
	if err != nil {
		return err
	}
	defer unlockImages()
	img, err := d.resolve(ctx, backend, jobImage, resp.RegistryAuth)
	if err != nil {
		return fmt.Errorf("job image %s: %w", image, err)
	}
	himg, err := d.resolve(ctx, backend, helperImage, nil)
	if err != nil {
		return fmt.Errorf("helper image %s: %w", p.HelperImage, err)
	}
	if err := noteImageUse(d.StateDir, d.timeNow(), img.Name, himg.Name); err != nil {
		return err
	}

	timeout := time.Duration(resp.RunnerInfo.Timeout) * time.Second
	if timeout <= 0 {
		timeout = defaultJobTimeout
	}
	now := d.timeNow().UTC()
	st := &JobState{
		JobID:        resp.ID,
		ProjectID:    resp.JobInfo.ProjectID,
		Prepared:     now,
		Deadline:     now.Add(timeout + deadlineMargin),
		ResponseFile: d.Contract.JobResponseFile,
		BuildsDir:    buildsDir,
		CacheDir:     cacheDir,
		ProjectDir:   d.projectDir(resp, buildsDir),
		Image:        ImageState{Ref: image, Name: img.Name, Digest: img.Digest},
		Helper:       ImageState{Ref: p.HelperImage, Name: himg.Name, Digest: himg.Digest},
		Allow:        allow,
		Requested:    requested,
		HelperAllow:  helperAllow,
		Definition:   resp.Definition(),
	}
	if err := job.writeState(st); err != nil {
		return err
	}
	w := d.stdout()
	fmt.Fprintf(w, "cleanroom: job image %s (%s)\n", image, img.Digest)
	fmt.Fprintf(w, "cleanroom: helper image %s (%s)\n", p.HelperImage, himg.Digest)
	fmt.Fprintf(w, "cleanroom: egress of the job's stages: %s\n", describeAllow(allow))
	fmt.Fprintf(w, "cleanroom: egress of the helper stages: %s\n", describeAllow(helperAllow))
	if serverURL == "" {
		// gitlab-runner's own synthetic jobs ([runners.experimental.
		// boot_verify]) name no instance; they fetch nothing either.
		fmt.Fprintln(w, "cleanroom: the job names no GitLab instance (CI_SERVER_URL is empty, as in gitlab-runner's boot_verify probe): the helper stages reach only helper.allow")
	}
	if len(resp.Secrets(p.RunnerOnly)) > 0 {
		fmt.Fprintf(w, "cleanroom: runner-only variables are kept out of every stage: %s\n", strings.Join(presentKeys(resp, p.RunnerOnly), ", "))
	}
	return nil
}

// refuseJobFeatures fails a job asking for what cleanroom never does, as
// the job's fault (not retried), naming the keyword and why.
func refuseJobFeatures(resp *Response) error {
	if len(resp.Services) > 0 {
		return buildErrorf("services: are not supported by this runner (cleanroom): a stage's only network is its egress proxy, so a service container could never be reached; remove services: from the job or run it on another runner")
	}
	for _, h := range resp.Hooks {
		if len(h.Script) == 0 {
			continue
		}
		return buildErrorf("hooks:%s is not supported by this runner (cleanroom): gitlab-runner runs it inside get_sources, the stage that can reach GitLab with the job token, and cleanroom never runs the job's code there; move the commands to before_script", h.Name)
	}
	return nil
}

func describeAllow(a []string) string {
	if len(a) == 0 {
		return "none"
	}
	return strings.Join(a, ", ")
}

func presentKeys(r *Response, keys []string) []string {
	var out []string
	for _, v := range r.Secrets(keys) {
		out = append(out, v.Key)
	}
	return out
}

// makeJobDirs creates the roots closed to other host users, and the job's
// own directories open to whatever user the job image runs as (the
// directories are mounted into the sandbox, where host users do not exist;
// the roots above them stay closed on the host).
func makeJobDirs(p *Policy, buildsDir, cacheDir string) error {
	for _, root := range []string{p.BuildsDir, p.CacheDir} {
		if err := os.MkdirAll(root, 0o700); err != nil {
			return err
		}
		os.Chmod(root, 0o700)
	}
	// Whatever a failed attempt left is removed: a job starts with an
	// empty builds directory.
	if err := os.RemoveAll(buildsDir); err != nil {
		return err
	}
	if err := os.Mkdir(buildsDir, 0o777); err != nil {
		return err
	}
	if err := os.Chmod(buildsDir, 0o777); err != nil {
		return err
	}
	if err := os.MkdirAll(cacheDir, 0o777); err != nil {
		return err
	}
	return os.Chmod(cacheDir, 0o777)
}

// projectDir is CI_PROJECT_DIR: what the runner says
// (CUSTOM_ENV_CI_PROJECT_DIR, which a job could override) when that lies
// inside the job's builds directory, else what the runner would compute
// (<builds_dir>/<project slug>). Either way it is inside the job's own
// directory, the only place the driver ever writes to.
func (d *Driver) projectDir(r *Response, buildsDir string) string {
	if hint := d.getenv("CUSTOM_ENV_CI_PROJECT_DIR"); hint != "" && filepath.IsAbs(hint) {
		hint = filepath.Clean(hint)
		if strings.HasPrefix(hint, buildsDir+"/") {
			return hint
		}
	}
	return filepath.Join(buildsDir, filepath.FromSlash(r.ProjectSlug()))
}

// resolve makes an image available: archives through the executor (they
// are named by content), registry images through Pull with auth.
func (d *Driver) resolve(ctx context.Context, b Backend, ir imageRef, auth func(string) (string, string, bool)) (sandbox.Image, error) {
	if ir.Kind != pipeline.Registry {
		return b.Resolve(ctx, ir.Raw)
	}
	var creds func(string) (string, string, error)
	if auth != nil {
		creds = func(host string) (string, string, error) {
			u, s, _ := auth(host)
			return u, s, nil
		}
	}
	img, err := b.Pull(ctx, ir.Raw, creds)
	if err != nil {
		return img, err
	}
	img.Ref = ir.Raw
	return img, nil
}

// openBackend takes a run lock for this call and connects; the lock's id
// prefixes every sandbox the call creates, so a later call can reap them
// if this one dies.
func (d *Driver) openBackend(ctx context.Context, log hclog.Logger) (*runlock.Lock, Backend, error) {
	if d.Open == nil {
		return nil, nil, errors.New("no sandbox backend configured")
	}
	lock, err := runlock.Acquire(runner.LocksDir(d.StateDir))
	if err != nil {
		return nil, nil, err
	}
	b, err := d.Open(ctx, lock.ID)
	if err != nil {
		lock.Release()
		return nil, nil, err
	}
	runner.Reap(d.StateDir, log)
	return lock, b, nil
}

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

	script, err := readScript(scriptPath)
	if err != nil {
		return err
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
		return buildErrorf("stage %s not run: %v", stage, err)
	}
	args, err := ShellArgs(script, stageScriptPath)
	if err != nil {
		return err
	}
	hostScript, err := writeStageScript(job, stage, rewritten)
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
	rec := egress.NewJSONLRecorder(events)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	step := d.stageStep(st, stage, kind, args, hostScript, lock.ID)
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
	var attach func(*netns.Namespace, string) (io.Closer, error)
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

// Cleanup answers cleanup_exec: remove every sandbox, namespace, directory
// and file of the job, and of any other job whose driver died. It never
// fails the job: problems are returned for logging only. It is safe to run
// any number of times, on a job that was never (or only half) prepared.
func (d *Driver) Cleanup(ctx context.Context) error {
	var errs []error
	log := d.log()
	resp, err := ReadResponse(d.Contract.JobResponseFile)
	if err != nil {
		errs = append(errs, err)
	}
	var job *jobDir
	if resp != nil {
		log = log.With("job", resp.ID)
		job, err = openJob(d.StateDir, resp.ID, false, lockWaitCleanup)
		if err != nil && !strings.Contains(err.Error(), "has no state") {
			errs = append(errs, err)
		}
	}
	// Connecting reaps the containers, snapshots and leases of every dead
	// call (this job's included), then runner.Reap their namespaces.
	lock, b, err := d.openBackend(ctx, log)
	if err != nil {
		errs = append(errs, fmt.Errorf("sandbox backend: %w", err))
	}
	runner.Reap(d.StateDir, log)
	if resp != nil && (job != nil || !jobLocked(d.StateDir, resp.ID)) {
		if err := removeJob(d.StateDir, resp.ID, d.buildsDir(resp)); err != nil {
			errs = append(errs, err)
		}
	}
	job.close()
	var self int64
	if resp != nil {
		self = resp.ID
	}
	errs = append(errs, d.sweep(self, log)...)
	if b != nil {
		// After the sweep: the images of swept jobs are no longer live.
		errs = append(errs, d.removeUnusedImages(ctx, b, log)...)
		b.Close()
		lock.Release()
	}
	releaseNetNSDir(d.StateDir)
	return errors.Join(errs...)
}

// jobLocked reports whether a live call holds a job's lock.
func jobLocked(stateDir string, id int64) bool {
	f, err := os.OpenFile(filepath.Join(jobPath(stateDir, id), lockFile), os.O_RDWR|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil
}

// sweep removes the state and builds directories of other jobs that are
// over but were never cleaned up (gitlab-runner killed, host crash): no
// call holds their lock, and either the runner has removed their payload
// (it does so only after cleanup) or their deadline has passed.
func (d *Driver) sweep(self int64, log hclog.Logger) []error {
	ents, err := os.ReadDir(jobsRoot(d.StateDir))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return []error{err}
	}
	var errs []error
	for _, e := range ents {
		id, err := strconv.ParseInt(e.Name(), 10, 64)
		if err != nil || id <= 0 || id == self || !e.IsDir() {
			continue
		}
		job, err := openJob(d.StateDir, id, false, 0)
		if err != nil {
			continue // locked by a live call, or not a job dir
		}
		st, serr := job.readState()
		stale := false
		buildsDir := filepath.Join(d.Policy.BuildsDir, strconv.FormatInt(id, 10))
		switch {
		case serr != nil:
			// A prepare that died before recording anything: stale once
			// its lock file is old.
			if fi, err := os.Stat(job.file(lockFile)); err == nil && d.timeNow().Sub(fi.ModTime()) > deadlineMargin {
				stale = true
			}
		default:
			if _, err := os.Stat(st.ResponseFile); errors.Is(err, os.ErrNotExist) || d.timeNow().After(st.Deadline) {
				stale = true
			}
			if filepath.Base(st.BuildsDir) == strconv.FormatInt(id, 10) && filepath.IsAbs(st.BuildsDir) {
				buildsDir = st.BuildsDir
			}
		}
		if stale {
			log.Info("removing an abandoned job", "abandoned_job", id)
			if err := removeJob(d.StateDir, id, buildsDir); err != nil {
				errs = append(errs, err)
			}
		}
		job.close()
	}
	return errs
}
