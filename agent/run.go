package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/cleanroom-ci/cleanroom/agent/jobs"
	"github.com/cleanroom-ci/cleanroom/agent/source"
	"github.com/cleanroom-ci/cleanroom/internal/exitcode"
	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
	"github.com/cleanroom-ci/cleanroom/sign"
)

// outcome is how one attempt ended.
type outcome struct {
	state    string
	exitCode int
	err      string
	result   *jobs.Result
	// logLost is set when part of the live log could not be published
	// (NATS unreachable): the agent's own copy is kept instead.
	logLost bool
	// stop is what stopped the run from outside (a cause of the run's
	// context), nil when it ended on its own.
	stop error
	// cause of a state error: jobs.CauseUser or jobs.CauseInfrastructure.
	cause string
}

func infraFailure(err error) outcome {
	return outcome{state: jobs.StateError, exitCode: exitcode.SystemFailure, err: err.Error(), cause: jobs.CauseInfrastructure}
}

// userFailure is a job refused for what its submitter controls (the
// pipeline file, its images and egress): exit 2 like any configuration
// failure, but not the agent's fault, so it is counted apart.
func userFailure(err error) outcome {
	return outcome{state: jobs.StateError, exitCode: exitcode.SystemFailure, err: err.Error(), cause: jobs.CauseUser}
}

// policyError is a pipeline the agent's admin does not allow (images,
// egress), as opposed to one that is missing or malformed.
type policyError struct{ error }

func (e policyError) Unwrap() error { return e.error }

// checkPipeline loads the job's pipeline from the source tree at ws and
// holds it against the agent's policy (images, egress); it returns the
// pipeline's path relative to ws. It runs at submission for an uploaded
// tree and again before the run, for every source.
func (a *Agent) checkPipeline(ws, name string, untrusted bool) (string, error) {
	rel, err := safeRel(orDefault(name, "cleanroom.yaml"))
	if err != nil {
		return "", fmt.Errorf("pipeline: %w", err)
	}
	pfile := filepath.Join(ws, rel)
	if _, err := os.Stat(pfile); errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("pipeline: the source has no file %s", rel)
	}
	p, err := pipeline.Load(pfile, pipeline.WithRuleCheck(func(r string) error { _, err := egress.ParseRule(r); return err }))
	if err != nil {
		return "", fmt.Errorf("pipeline: %s", strings.ReplaceAll(err.Error(), ws+"/", ""))
	}
	if err := checkImages(p, ws, a.cfg.ImagesAllowed); err != nil {
		return "", policyError{err}
	}
	maximum, capped := a.cfg.EgressMaximum, a.cfg.EgressCapped
	if untrusted {
		maximum, capped = a.cfg.Untrusted.EgressMaximum, true
	}
	if err := checkEgress(p, maximum, capped, ownAddrs()); err != nil {
		if untrusted {
			err = fmt.Errorf("untrusted build (a pull request from a fork): %w", err)
		}
		return "", policyError{err}
	}
	return rel, nil
}

// run carries out one attempt: source onto disk, pipeline checked against
// the agent's policy, `cleanroom run` in a child process. The job's
// directory stays: its outputs are stored, and the directory removed,
// when the result is recorded (settle), which may have to wait for NATS.
func (a *Agent) run(ctx context.Context, job *jobs.Job) outcome {
	dir := a.jobDir(job.ID)
	os.RemoveAll(dir) // a previous attempt on this machine
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return infraFailure(err)
	}
	logw, err := a.newLog(job.ID, filepath.Join(dir, "job.log"))
	if err != nil {
		return infraFailure(err)
	}
	logw.Printf("job %s, attempt %d, on agent %s", job.ID, job.Attempt, a.id)
	out := a.runLogged(ctx, job, dir, logw)
	switch cause := out.stop; {
	case errors.Is(cause, errLeaseLost):
		// Another agent runs the job now: keep nothing of this run.
		logw.Printf("this run on %s was stopped: the job's lease passed to another agent", a.id)
		logw.Close()
		return out
	case errors.Is(cause, errQueueUnreachable):
		logw.Printf("this run on %s was stopped: NATS was unreachable for longer than ack_wait, so another agent may take the job; it goes back to the queue uncounted", a.id)
		logw.Close()
		return out
	case errors.Is(cause, errDraining):
		logw.Printf("agent %s is stopping: this run was stopped and the job goes back to the queue", a.id)
		logw.Close()
		return out
	}
	switch out.state {
	case jobs.StateCancelled:
		logw.Printf("job cancelled")
	case jobs.StateSucceeded:
		logw.Printf("job succeeded")
	default:
		if out.err != "" {
			logw.Printf("job %s: %s", out.state, out.err)
		} else {
			logw.Printf("job %s (exit %d)", out.state, out.exitCode)
		}
	}
	logw.Close()
	out.logLost = logw.lost.Load()
	return out
}

func (a *Agent) runLogged(ctx context.Context, job *jobs.Job, dir string, logw *logPublisher) outcome {
	ws := filepath.Join(dir, "src")
	outDir := filepath.Join(dir, "out")
	if err := a.fetchSource(ctx, job, ws, logw); err != nil {
		if ctx.Err() != nil {
			return a.interrupted(context.Cause(ctx))
		}
		return infraFailure(err)
	}
	rel, err := a.checkPipeline(ws, job.Pipeline, job.Untrusted)
	if err != nil {
		return userFailure(err)
	}
	args, env, err := a.childArgs(rel, ws, outDir, job.Untrusted)
	if err != nil {
		return infraFailure(err)
	}
	secrets, err := a.secretsFor(job)
	if err != nil {
		return infraFailure(err)
	}
	if len(secrets) > 0 {
		args, env = secretArgs(secrets, args, env)
		names := make([]string, 0, len(secrets))
		for k := range secrets {
			names = append(names, k)
		}
		sort.Strings(names)
		logw.Printf("secrets: %s", strings.Join(names, ", "))
	}
	var stdout bytes.Buffer
	stderr := &lastError{w: logw}
	code, err := a.runChild(ctx, ws, args, env, &stdout, stderr)
	// What stopped the run is known now: a cancel or a lost lease after
	// this point comes too late to change a finished build's result.
	stop := context.Cause(ctx)
	if ctx.Err() == nil {
		stop = nil
	}
	if err != nil {
		o := infraFailure(err)
		o.stop = stop
		return o
	}
	out := outcome{exitCode: code}
	if code != 0 {
		out.err = stderr.message()
	}
	var res childResult
	if json.Unmarshal(stdout.Bytes(), &res) == nil {
		out.result = summarize(&res, outDir)
	}
	switch {
	case stop != nil:
		// The child stops its steps and still reports the ones that ran:
		// a cancelled or timed-out job keeps its step table.
		res := out.result
		out = a.interrupted(stop)
		out.result = res
	case code == exitcode.OK:
		out.state = jobs.StateSucceeded
	case code == exitcode.BuildFailure:
		out.state = jobs.StateFailed
	default:
		out.state = jobs.StateError
	}
	out.stop = stop
	return out
}

// interrupted names why a run stopped from outside.
func (a *Agent) interrupted(cause error) outcome {
	o := a.interruptedBy(cause)
	o.stop = cause
	return o
}

func (a *Agent) interruptedBy(cause error) outcome {
	switch {
	case errors.Is(cause, errCancelRequested):
		return outcome{state: jobs.StateCancelled, exitCode: exitcode.SystemFailure}
	case errors.Is(cause, errJobTimeout):
		return outcome{state: jobs.StateError, exitCode: exitcode.SystemFailure, err: fmt.Sprintf("the job ran longer than jobs.timeout (%s) and was stopped", a.cfg.JobTimeout)}
	}
	return outcome{state: jobs.StateError, exitCode: exitcode.SystemFailure, err: fmt.Sprint(cause)}
}

// fetchSource puts the job's source at ws: a git commit fetched through
// the agent's git allowlist, or the uploaded tarball.
func (a *Agent) fetchSource(ctx context.Context, job *jobs.Job, ws string, logw *logPublisher) error {
	switch job.Source.Kind {
	case "git":
		logw.Printf("fetching %s %s", job.Source.Repository, orDefault(job.Source.Commit, job.Source.Ref))
		opts, err := a.gitOptions(job.Source.Repository)
		if err != nil {
			return fmt.Errorf("source: %w", err)
		}
		g, err := source.FetchGit(ctx, job.Source.Repository, job.Source.Ref, job.Source.Commit, ws, opts)
		if err != nil {
			return fmt.Errorf("source: %w", err)
		}
		job.Source.Commit = g.Commit
		logw.Printf("source: %s at %s", g.Remote, g.Commit)
		return nil
	case "tarball":
		r, _, err := a.broker.GetFile(ctx, jobs.SourceObject(job.ID))
		if err != nil {
			return fmt.Errorf("source tarball: %w", err)
		}
		defer r.Close()
		if err := os.MkdirAll(ws, 0o755); err != nil {
			return err
		}
		t, err := source.ExtractTarball(r, ws, source.Limits{})
		if err != nil {
			return fmt.Errorf("source: %w", err)
		}
		if job.Source.SHA256 != "" && t.SHA256 != job.Source.SHA256 {
			return fmt.Errorf("source tarball: stored copy has sha256 %s, the upload had %s", t.SHA256, job.Source.SHA256)
		}
		logw.Printf("source: tarball sha256:%s, %d files", t.SHA256, t.Files)
		return nil
	}
	return fmt.Errorf("unknown source kind %q", job.Source.Kind)
}

// gitOptions are the fetch options for a remote: the allowlist, and the
// credential and CA configured for its host.
func (a *Agent) gitOptions(remote string) (source.GitOptions, error) {
	o := source.GitOptions{Allow: a.cfg.SourceAllow, AllowHTTP: a.cfg.SourceAllowHTTP, Logger: a.log.Named("git")}
	u, err := url.Parse(remote)
	if err != nil {
		return o, err
	}
	for _, c := range a.cfg.SourceCredentials {
		if c.Host == strings.ToLower(u.Host) || (u.Port() == "" && c.Host == strings.ToLower(u.Hostname())) {
			h, err := os.ReadFile(c.HeaderFile)
			if err != nil {
				return o, fmt.Errorf("credential for %s: %w", c.Host, err)
			}
			o.AuthHeader = strings.TrimRight(string(h), "\r\n")
			break
		}
	}
	if a.cfg.SourceCA != "" {
		pem, err := os.ReadFile(a.cfg.SourceCA)
		if err != nil {
			return o, fmt.Errorf("source.ca: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return o, fmt.Errorf("source.ca %s: no PEM certificate", a.cfg.SourceCA)
		}
		o.UpstreamTLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return o, nil
}

// childArgs builds the `cleanroom run` command line of a job. The child
// gets no environment of the agent's but PATH and, for key signing, the
// key's password: NATS credentials, tokens and webhook secrets stay here.
// The pipeline is named relative to the workspace, the child's working
// directory, so that its messages (lint, errors with file:line) name the
// file as the repository does, not the agent's disk.
//
// An untrusted job (a pull request from a fork) gets no signing identity
// at all (nor the key's password), untrusted.allow instead of run.allow,
// and the untrusted builder id, which its provenance records.
func (a *Agent) childArgs(pipelineRel, ws, outDir string, untrusted bool) ([]string, []string, error) {
	builder, allow := a.cfg.BuilderID, a.cfg.RunAllow
	if untrusted {
		builder, allow = a.cfg.Untrusted.BuilderID, a.cfg.Untrusted.Allow
	}
	args := append([]string{}, a.opts.ChildArgs...)
	args = append(args, "run", "-f", pipelineRel, "--workdir", ws, "--out", outDir, "--output", "json",
		"--builder-id", builder)
	for _, r := range allow {
		args = append(args, "--allow", r)
	}
	if a.cfg.GoProxyUpstream != "" {
		args = append(args, "--goproxy-upstream", a.cfg.GoProxyUpstream)
	}
	if a.cfg.Runtime != "" {
		args = append(args, "--force-runtime", a.cfg.Runtime)
	}
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + filepath.Dir(outDir), "GOPROXY=off"}
	if untrusted {
		return args, env, nil
	}
	s := a.cfg.Signing
	switch s.Mode {
	case sign.ModeKey:
		args = append(args, "--sign-key", s.Key)
		if s.PasswordFile != "" {
			pw, err := os.ReadFile(s.PasswordFile)
			if err != nil {
				return nil, nil, fmt.Errorf("signing password: %w", err)
			}
			env = append(env, "COSIGN_PASSWORD="+strings.TrimRight(string(pw), "\r\n"))
		} else {
			env = append(env, "COSIGN_PASSWORD=")
		}
	case sign.ModeKeyless:
		args = append(args, "--keyless", "--identity-token", s.IdentityTokenFile)
		for flag, v := range map[string]string{"--fulcio-url": s.FulcioURL, "--rekor-url": s.RekorURL, "--tsa-url": s.TSAURL} {
			if v != "" {
				args = append(args, flag, v)
			}
		}
	}
	if s.TrustedRoot != "" {
		args = append(args, "--trusted-root", s.TrustedRoot)
	}
	return args, env, nil
}

// runChild runs `cleanroom run` and returns its exit code. The child
// dies with the agent (SIGTERM through Pdeathsig, which it handles as a
// cancel: every sandbox it started is removed), so a killed agent leaves
// no build running that another agent might duplicate. Cancelling ctx
// sends SIGTERM too, then SIGKILL after a minute.
func (a *Agent) runChild(ctx context.Context, dir string, args, env []string, stdout, stderr io.Writer) (int, error) {
	type result struct {
		code int
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		// Pdeathsig fires when the thread that started the child exits,
		// not the process: keep this goroutine on its thread until the
		// child is reaped.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cmd := exec.Command(a.opts.Binary, args...)
		cmd.Dir = dir
		cmd.Env, cmd.Stdout, cmd.Stderr = env, stdout, stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
		if err := cmd.Start(); err != nil {
			ch <- result{err: fmt.Errorf("start cleanroom run: %w", err)}
			return
		}
		waited := make(chan struct{})
		go func() {
			select {
			case <-ctx.Done():
				cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-time.After(time.Minute):
					syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				case <-waited:
				}
			case <-waited:
			}
		}()
		err := cmd.Wait()
		close(waited)
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			ch <- result{code: ee.ExitCode()}
			return
		}
		ch <- result{err: err}
	}()
	r := <-ch
	return r.code, r.err
}

// lastError passes the child's stderr through and keeps its last
// "cleanroom: …" line: the reason `cleanroom run` gives when it fails.
type lastError struct {
	w       io.Writer
	partial []byte
	last    string
}

func (l *lastError) Write(p []byte) (int, error) {
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		if line, ok := bytes.CutPrefix(l.partial[:i], []byte("cleanroom: ")); ok {
			l.last = string(line)
		}
		l.partial = l.partial[i+1:]
	}
	if len(l.partial) > 64<<10 {
		l.partial = l.partial[:0] // a step's endless line is not an error message
	}
	return l.w.Write(p)
}

func (l *lastError) message() string { return l.last }

// summarize keeps what the API and the page show of the runner's result.
func summarize(res *childResult, outDir string) *jobs.Result {
	out := &jobs.Result{FailedStep: res.Failed, SignedBy: res.SignedBy}
	for _, s := range res.Steps {
		denied := 0
		for _, d := range s.Denials {
			denied += d.Count
		}
		out.Denials += denied
		out.Steps = append(out.Steps, jobs.Step{Name: s.Name, Status: s.Status, ExitCode: s.ExitCode, Seconds: s.DurationS, Denied: denied})
	}
	for _, sub := range res.Subjects {
		out.Artifacts = append(out.Artifacts, jobs.Artifact{Name: sub.Name, SHA256: sub.SHA256})
	}
	// Output names, as stored (relative to the output directory).
	rel := func(p string) string {
		if r, err := filepath.Rel(outDir, p); err == nil && !strings.HasPrefix(r, "..") {
			return filepath.ToSlash(r)
		}
		return filepath.Base(p)
	}
	if res.Provenance != "" {
		out.Provenance = rel(res.Provenance)
	}
	for _, b := range res.Bundles {
		out.Bundles = append(out.Bundles, rel(b))
	}
	return out
}

// storeOutputs keeps the run's output directory (logs, egress log,
// summary, provenance, bundles) and its artifacts, each re-hashed on the
// way in and compared with the digest the provenance names.
func (a *Agent) storeOutputs(ctx context.Context, id, outDir, ws string, res *jobs.Result) ([]jobs.Output, error) {
	var outs []jobs.Output
	err := filepath.WalkDir(outDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, _ := filepath.Rel(outDir, p)
		o, err := a.storeFile(ctx, id, filepath.ToSlash(rel), p)
		if err != nil {
			return err
		}
		outs = append(outs, o)
		return nil
	})
	if err != nil {
		return outs, err
	}
	if res != nil {
		for _, art := range res.Artifacts {
			rel, err := safeRel(art.Name)
			if err != nil {
				return outs, err
			}
			o, err := a.storeFile(ctx, id, "artifacts/"+filepath.ToSlash(rel), filepath.Join(ws, rel))
			if err != nil {
				return outs, err
			}
			if o.SHA256 != art.SHA256 {
				return outs, fmt.Errorf("artifact %s changed after it was hashed (sha256 %s, provenance says %s)", art.Name, o.SHA256, art.SHA256)
			}
			outs = append(outs, o)
		}
	}
	sort.Slice(outs, func(i, j int) bool { return outs[i].Name < outs[j].Name })
	return outs, nil
}

func (a *Agent) storeFile(ctx context.Context, id, name, path string) (jobs.Output, error) {
	f, err := os.Open(path)
	if err != nil {
		return jobs.Output{}, err
	}
	defer f.Close()
	h := sha256.New()
	info, err := a.broker.PutFile(ctx, jobs.OutputObject(id, name), io.TeeReader(f, h))
	if err != nil {
		return jobs.Output{}, fmt.Errorf("store %s: %w", name, err)
	}
	return jobs.Output{Name: name, Size: int64(info.Size), SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}
