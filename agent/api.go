package agent

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/cleanroom-ci/cleanroom/agent/auth"
	"github.com/cleanroom-ci/cleanroom/agent/jobs"
	"github.com/cleanroom-ci/cleanroom/agent/source"
	"github.com/cleanroom-ci/cleanroom/agent/webhook"
	"github.com/cleanroom-ci/cleanroom/internal/exitcode"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
)

// maxJSONBody bounds a JSON job submission: it is a few URLs.
const maxJSONBody = 64 << 10

func (a *Agent) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", a.readyz)
	mux.Handle("GET /metrics", a.auth.Require(auth.ScopeRead, func(w http.ResponseWriter, r *http.Request, _ auth.Token) {
		a.metrics.handler().ServeHTTP(w, r)
	}))
	mux.Handle("POST /api/v1/jobs", a.auth.Require(auth.ScopeSubmit, a.submit))
	mux.Handle("GET /api/v1/jobs", a.auth.Require(auth.ScopeRead, a.list))
	mux.Handle("GET /api/v1/jobs/{id}", a.auth.Require(auth.ScopeRead, a.get))
	mux.Handle("GET /api/v1/jobs/{id}/log", a.auth.Require(auth.ScopeRead, a.logs))
	mux.Handle("POST /api/v1/jobs/{id}/cancel", a.auth.Require(auth.ScopeSubmit, a.cancel))
	mux.Handle("POST /api/v1/jobs/{id}/rerun", a.auth.Require(auth.ScopeSubmit, a.rerunAPI))
	mux.Handle("GET /api/v1/jobs/{id}/files", a.auth.Require(auth.ScopeRead, a.files))
	mux.Handle("GET /api/v1/jobs/{id}/files/{name...}", a.auth.Require(auth.ScopeRead, a.file))
	mux.HandleFunc("POST /hooks/{name}", a.hook)
	a.registerWeb(mux)
	// The page's cookie authenticates API calls too, so no state-changing
	// request may come from another origin (Sec-Fetch-Site / Origin);
	// curl, CI jobs and forges' webhooks send neither header and pass.
	return securityHeaders(http.NewCrossOriginProtection().Handler(mux))
}

// securityHeaders are set on every response: nothing the agent serves is
// meant to be framed, sniffed or cached by a shared cache.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

func (a *Agent) readyz(w http.ResponseWriter, _ *http.Request) {
	switch {
	case a.draining.Load():
		http.Error(w, "draining", http.StatusServiceUnavailable)
	case !a.broker.Connected():
		http.Error(w, "not connected to NATS", http.StatusServiceUnavailable)
	default:
		io.WriteString(w, "ready\n")
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// SubmitRequest is the JSON body of POST /api/v1/jobs.
type SubmitRequest struct {
	Git      *GitSource `json:"git"`
	Pipeline string     `json:"pipeline"`
}

// GitSource names a commit to build.
type GitSource struct {
	Repository string `json:"repository"`
	Ref        string `json:"ref"`
	Commit     string `json:"commit"`
}

// submitted is the answer to a submission.
type submitted struct {
	ID  string   `json:"id"`
	Job jobs.Job `json:"job"`
	URL string   `json:"url"`
	Log string   `json:"log"`
	// Spooled: NATS was unreachable; the agent keeps the job on its disk
	// and queues it when NATS is back.
	Spooled bool `json:"spooled,omitempty"`
}

func (a *Agent) submit(w http.ResponseWriter, r *http.Request, tok auth.Token) {
	// A draining agent still queues jobs: the queue is shared (or on this
	// agent's disk), so another agent, or this one after its restart,
	// runs them. Only /readyz says "send work elsewhere".
	now := time.Now().UTC()
	job := jobs.Job{ID: jobs.NewID(now), Created: now, Trigger: jobs.Trigger{Kind: "api", Token: tok.Name}}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var tarball *os.File
	switch ct {
	case "application/json":
		var req SubmitRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSONBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			auth.WriteError(w, http.StatusBadRequest, "job: "+jsonError(err))
			return
		}
		if req.Git == nil {
			auth.WriteError(w, http.StatusBadRequest, `job: "git" is required in a JSON submission ({"git": {"repository": "https://…", "ref": "refs/heads/main"}}); to build an uploaded tree, POST a tarball (Content-Type: application/gzip) instead`)
			return
		}
		if _, err := safeRel(orDefault(req.Pipeline, "cleanroom.yaml")); err != nil {
			auth.WriteError(w, http.StatusBadRequest, "job: pipeline: "+err.Error())
			return
		}
		if err := a.checkGit(req.Git); err != nil {
			auth.WriteError(w, http.StatusBadRequest, "job: git: "+err.Error())
			return
		}
		job.Source = jobs.Source{Kind: "git", Repository: req.Git.Repository, Ref: req.Git.Ref, Commit: req.Git.Commit}
		job.Pipeline = req.Pipeline
	case "application/gzip", "application/x-gzip", "application/x-tar", "application/octet-stream":
		job.Pipeline = orDefault(r.URL.Query().Get("pipeline"), "cleanroom.yaml")
		if _, err := safeRel(job.Pipeline); err != nil {
			auth.WriteError(w, http.StatusBadRequest, "job: pipeline: "+err.Error())
			return
		}
		spool, sum, size, err := a.spoolTarball(w, r, job.Pipeline)
		if err != nil {
			status := http.StatusBadRequest
			var mbe *http.MaxBytesError
			var pe policyError
			var pr pipelineRefused
			prefix := "source tarball: "
			switch {
			case errors.As(err, &mbe):
				status = http.StatusRequestEntityTooLarge
			case errors.As(err, &pe):
				status, prefix = http.StatusForbidden, "job: "
			case errors.As(err, &pr):
				prefix = "job: "
			}
			auth.WriteError(w, status, prefix+err.Error())
			return
		}
		defer os.Remove(spool.Name()) // unless the job is spooled: then it moved
		defer spool.Close()
		tarball = spool
		job.Source = jobs.Source{Kind: "tarball", SHA256: sum, Size: size}
	default:
		auth.WriteError(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q: send application/json (a git source) or application/gzip / application/x-tar (a source tarball)", ct))
		return
	}
	if job.Pipeline == "" {
		job.Pipeline = "cleanroom.yaml"
	}
	if _, err := safeRel(job.Pipeline); err != nil {
		auth.WriteError(w, http.StatusBadRequest, "job: pipeline: "+err.Error())
		return
	}
	job, spooled, err := a.submitOrSpool(r.Context(), job, tarball)
	if err != nil {
		auth.WriteError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	a.log.Info("job submitted", "job", job.ID, "token", tok.Name, "source", job.Source.Kind, "spooled", spooled)
	writeJSON(w, http.StatusAccepted, a.submittedBody(job, spooled))
}

func (a *Agent) submittedBody(j jobs.Job, spooled bool) submitted {
	return submitted{ID: j.ID, Job: j, URL: "/api/v1/jobs/" + j.ID, Log: "/api/v1/jobs/" + j.ID + "/log", Spooled: spooled}
}

func jsonError(err error) string {
	var mbe *http.MaxBytesError
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &mbe):
		return fmt.Sprintf("body larger than %d bytes", mbe.Limit)
	case errors.As(err, &se):
		return fmt.Sprintf("malformed JSON at byte %d: %v", se.Offset, se)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q: want %s, got %s", te.Field, te.Type, te.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "malformed JSON: the body ends before the JSON object does"
	case errors.Is(err, io.EOF):
		return "empty body; send a JSON object"
	}
	return err.Error()
}

// checkGit refuses a git source the agent would not fetch, before it is
// queued, so that the submitter gets the reason at once. The fetch itself
// enforces the allowlist again through the egress proxy.
func (a *Agent) checkGit(g *GitSource) error {
	u, err := url.Parse(g.Repository)
	if err != nil || u.Host == "" {
		return fmt.Errorf("repository %q is not a URL", g.Repository)
	}
	if u.Scheme != "https" && !(u.Scheme == "http" && a.cfg.SourceAllowHTTP) {
		return fmt.Errorf("repository %q: the agent fetches https:// remotes only", g.Repository)
	}
	if u.User != nil {
		return errors.New("repository: credentials in the URL are refused; they would be stored with the job")
	}
	if g.Ref == "" && g.Commit == "" {
		return errors.New(`give "ref" (a branch or tag, e.g. refs/heads/main) and/or "commit" (40 hex digits)`)
	}
	if g.Commit != "" && !isHexSHA(g.Commit) {
		return fmt.Errorf("commit %q: want 40 lower-case hex digits", g.Commit)
	}
	if g.Ref != "" && (strings.HasPrefix(g.Ref, "-") || strings.Contains(g.Ref, "..") || strings.ContainsAny(g.Ref, " \t\n\r~^:?*[\\")) {
		return fmt.Errorf("ref %q is not a valid git ref name", g.Ref)
	}
	return gitHostAllowed(a.cfg.SourceAllow, u)
}

// gitHostAllowed checks a remote's host against the git allowlist by name
// only, without a DNS query (a query for an unlisted name would itself be
// egress); the fetch goes through the egress proxy, which checks the
// addresses the name resolves to.
func gitHostAllowed(allow []string, u *url.URL) error {
	pol, err := egress.NewPolicy(allow)
	if err != nil {
		return err
	}
	port := 443
	if u.Scheme == "http" {
		port = 80
	}
	if p := u.Port(); p != "" {
		port, _ = strconv.Atoi(p)
	}
	host := strings.Trim(u.Hostname(), "[]")
	if ip, err := netip.ParseAddr(host); err == nil {
		if d := pol.Decide(host, port, []netip.Addr{ip}); !d.Allowed {
			return fmt.Errorf("host %s is not in the agent's git allowlist (source.allow): %s", u.Host, d.Reason)
		}
	} else if !pol.NeedsResolve(host, port) {
		return fmt.Errorf("host %s is not in the agent's git allowlist (source.allow); ask the agent's admin to add it", u.Host)
	}
	return nil
}

func isHexSHA(s string) bool {
	if len(s) != 40 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// pipelineRefused marks an upload refused for its pipeline (missing,
// malformed, or against the agent's policy) rather than the tarball.
type pipelineRefused struct{ error }

func (e pipelineRefused) Unwrap() error { return e.error }

// spoolTarball saves an upload to a temporary file, hashing it, and
// extracts it once into a scratch directory so that a bad tarball (path
// traversal, devices, too large) or a pipeline the job could not run
// (missing, malformed, against the agent's policy) is refused now with
// the reason, not later as a failed job.
func (a *Agent) spoolTarball(w http.ResponseWriter, r *http.Request, pipelineName string) (*os.File, string, int64, error) {
	dir := a.cfg.DataDir + "/uploads"
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", 0, err
	}
	f, err := os.CreateTemp(dir, "upload-*")
	if err != nil {
		return nil, "", 0, err
	}
	fail := func(err error) (*os.File, string, int64, error) {
		f.Close()
		os.Remove(f.Name())
		return nil, "", 0, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), http.MaxBytesReader(w, r.Body, a.cfg.MaxUpload))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fail(fmt.Errorf("larger than source.max_upload (%d bytes): %w", a.cfg.MaxUpload, err))
		}
		return fail(err)
	}
	if n == 0 {
		return fail(errors.New("empty body; send a tar or tar.gz of the source tree"))
	}
	scratch, err := os.MkdirTemp(dir, "check-*")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(scratch)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fail(err)
	}
	if _, err := source.ExtractTarball(bufio.NewReader(f), scratch, source.Limits{}); err != nil {
		return fail(err)
	}
	if _, err := a.checkPipeline(scratch, pipelineName, false); err != nil {
		return fail(pipelineRefused{err})
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fail(err)
	}
	return f, hex.EncodeToString(h.Sum(nil)), n, nil
}

func (a *Agent) list(w http.ResponseWriter, r *http.Request, _ auth.Token) {
	limit := 100
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			auth.WriteError(w, http.StatusBadRequest, "limit: want 1 to 1000")
			return
		}
		limit = n
	}
	f, err := parseJobFilter(r.URL.Query())
	if err != nil {
		auth.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	list, next, err := a.broker.ListPage(r.Context(), f.before, limit, f.keep)
	if err != nil {
		auth.WriteError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	body := map[string]any{"jobs": list}
	if next != "" {
		q := r.URL.Query()
		q.Set("before", next)
		body["next"] = "/api/v1/jobs?" + q.Encode()
	}
	writeJSON(w, http.StatusOK, body)
}

// jobFilter selects jobs for the list (API and page): by state, ref (a
// full ref, or a branch name), hook, repository, trigger kind; before is
// the paging cursor (a job id: older jobs only).
type jobFilter struct {
	state, ref, hook, repository, trigger, before string
}

func parseJobFilter(q url.Values) (jobFilter, error) {
	f := jobFilter{state: q.Get("state"), ref: q.Get("ref"), hook: q.Get("hook"), repository: q.Get("repository"), trigger: q.Get("trigger"), before: q.Get("before")}
	switch f.state {
	case "", jobs.StateQueued, jobs.StateRunning, jobs.StateSucceeded, jobs.StateFailed, jobs.StateError, jobs.StateCancelled:
	default:
		return f, fmt.Errorf("state %q: use queued, running, succeeded, failed, error or cancelled", f.state)
	}
	if f.before != "" && !jobs.ValidID(f.before) {
		return f, fmt.Errorf("before %q is not a job id", f.before)
	}
	if f.ref != "" && !strings.HasPrefix(f.ref, "refs/") {
		f.ref = "refs/heads/" + f.ref
	}
	return f, nil
}

func (f jobFilter) keep(j jobs.Job) bool {
	return (f.state == "" || j.State == f.state) && (f.ref == "" || j.Source.Ref == f.ref) &&
		(f.hook == "" || j.Trigger.Hook == f.hook) && (f.repository == "" || j.Source.Repository == f.repository) &&
		(f.trigger == "" || j.Trigger.Kind == f.trigger)
}

func (f jobFilter) active() bool {
	return f.state != "" || f.ref != "" || f.hook != "" || f.repository != "" || f.trigger != ""
}

// job loads the job named in the path, answering 404 itself.
func (a *Agent) job(w http.ResponseWriter, r *http.Request) (jobs.Job, bool) {
	j, _, err := a.broker.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		if sj, ok := a.spooledJob(r.PathValue("id")); ok {
			return sj, true // queued once NATS is back
		}
	}
	if errors.Is(err, jobs.ErrNotFound) {
		auth.WriteError(w, http.StatusNotFound, fmt.Sprintf("no job %q", r.PathValue("id")))
		return j, false
	}
	if err != nil {
		auth.WriteError(w, http.StatusServiceUnavailable, err.Error())
		return j, false
	}
	return j, true
}

func (a *Agent) get(w http.ResponseWriter, r *http.Request, _ auth.Token) {
	if j, ok := a.job(w, r); ok {
		writeJSON(w, http.StatusOK, j)
	}
}

func (a *Agent) cancel(w http.ResponseWriter, r *http.Request, tok auth.Token) {
	j, ok := a.job(w, r)
	if !ok {
		return
	}
	if !mayCancel(tok, j) {
		auth.WriteError(w, http.StatusForbidden, "only the token that submitted this job, or an admin token, may cancel it")
		return
	}
	j, err := a.requestCancel(r.Context(), j.ID, "token "+tok.Name)
	if errors.Is(err, errAlreadyFinished) {
		auth.WriteError(w, http.StatusConflict, fmt.Sprintf("job %s already finished (%s)", j.ID, j.State))
		return
	}
	if err != nil {
		auth.WriteError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	a.log.Info("job cancel requested", "job", j.ID, "by", "token "+tok.Name)
	writeJSON(w, http.StatusAccepted, j)
}

// requestCancel asks for a job to stop: the agent running it sees the
// request through its watch; a queued job is settled here.
func (a *Agent) requestCancel(ctx context.Context, id, by string) (jobs.Job, error) {
	var queuedCancel bool
	j, err := a.broker.Update(ctx, id, func(j *jobs.Job) error {
		if jobs.Terminal(j.State) {
			return errAlreadyFinished
		}
		j.CancelRequested, j.CancelledBy = true, by
		queuedCancel = j.State == jobs.StateQueued
		if queuedCancel {
			// No agent holds it: settle it here; the queue message is
			// acknowledged when an agent next sees it.
			j.State, j.Finished, j.Error, j.ExitCode = jobs.StateCancelled, time.Now().UTC(), "cancelled by "+by, exitcode.SystemFailure
		}
		return nil
	})
	if err == nil && queuedCancel {
		a.broker.EndLog(ctx, j.ID, j.State)
	}
	return j, err
}

// cancelSuperseded cancels the earlier unfinished jobs of a hook's branch
// (or pull request) when a newer push queues a job for it: only the
// newest commit's result matters, and the agents' time goes to it.
func (a *Agent) cancelSuperseded(newer jobs.Job) {
	ctx, cancel := context.WithTimeout(a.bg, 30*time.Second)
	defer cancel()
	list, err := a.broker.List(ctx, 1000)
	if err != nil {
		a.log.Warn("finding superseded jobs failed", "job", newer.ID, "error", err)
		return
	}
	for _, j := range list {
		if j.ID == newer.ID || jobs.Terminal(j.State) || j.Trigger.Hook != newer.Trigger.Hook ||
			j.Source.Ref != newer.Source.Ref || j.Trigger.PullRequest != newer.Trigger.PullRequest || !j.Created.Before(newer.Created) {
			continue
		}
		if _, err := a.requestCancel(ctx, j.ID, "job "+newer.ID+", a newer push"); err == nil {
			a.log.Info("cancelled a superseded job", "job", j.ID, "newer", newer.ID, "ref", j.Source.Ref)
		}
	}
}

var errAlreadyFinished = errors.New("already finished")

// mayCancel: the token that submitted an API job, or an admin.
func mayCancel(tok auth.Token, j jobs.Job) bool {
	return tok.Scope.Allows(auth.ScopeAdmin) || (j.Trigger.Kind == "api" && j.Trigger.Token == tok.Name)
}

// rerun queues a job again: the same source (an uploaded tree is copied),
// pipeline and trust (a fork's pull request stays untrusted), and the
// same trigger, so a webhook job keeps its hook's secrets scope and
// commit status; RerunOf and Token say who asked.
func (a *Agent) rerun(ctx context.Context, orig jobs.Job, tok auth.Token) (jobs.Job, error) {
	now := time.Now().UTC()
	job := jobs.Job{ID: jobs.NewID(now), Created: now, Source: orig.Source, Pipeline: orig.Pipeline, Trigger: orig.Trigger, Untrusted: orig.Untrusted}
	job.Trigger.RerunOf, job.Trigger.Token, job.Trigger.Delivery = orig.ID, tok.Name, ""
	var tarball io.Reader
	if orig.Source.Kind == "tarball" {
		rc, _, err := a.broker.GetFile(ctx, jobs.SourceObject(orig.ID))
		if err != nil {
			return jobs.Job{}, fmt.Errorf("the source of job %s is gone: %w", orig.ID, err)
		}
		defer rc.Close()
		tarball = rc
	}
	return a.broker.Submit(ctx, job, tarball)
}

func (a *Agent) rerunAPI(w http.ResponseWriter, r *http.Request, tok auth.Token) {
	j, ok := a.job(w, r)
	if !ok {
		return
	}
	nj, err := a.rerun(r.Context(), j, tok)
	if err != nil {
		auth.WriteError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	a.log.Info("job re-run", "job", nj.ID, "of", j.ID, "token", tok.Name)
	writeJSON(w, http.StatusAccepted, a.submittedBody(nj, false))
}

// logs streams a job's log from its start, following it until the job
// ends: as Server-Sent Events (Accept: text/event-stream; event "log"
// with {"text": …}, then event "end" with {"state": …}) or as plain text.
func (a *Agent) logs(w http.ResponseWriter, r *http.Request, _ auth.Token) {
	j, ok := a.job(w, r)
	if !ok {
		return
	}
	sse := strings.Contains(r.Header.Get("Accept"), "text/event-stream")
	flusher, _ := w.(http.Flusher)
	if sse {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("X-Accel-Buffering", "no")
	} else {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	}
	w.WriteHeader(http.StatusOK)
	if flusher != nil {
		flusher.Flush()
	}
	emit := func(p []byte) error {
		var err error
		if sse {
			b, _ := json.Marshal(map[string]string{"text": string(p)})
			_, err = fmt.Fprintf(w, "event: log\ndata: %s\n\n", b)
		} else {
			_, err = w.Write(p)
		}
		if flusher != nil {
			flusher.Flush()
		}
		return err
	}
	var state string
	if jobs.Terminal(j.State) {
		// A finished job's log is complete: never wait for more (an end
		// mark may be missing if its agent died at the wrong moment).
		state = j.State
		if !a.storedLog(r.Context(), j, emit) {
			a.broker.ReadLog(r.Context(), j.ID, writerFunc(emit))
		}
	} else {
		var err error
		state, err = a.broker.FollowLog(r.Context(), j.ID, emit)
		if err != nil {
			return
		}
	}
	if sse {
		b, _ := json.Marshal(map[string]string{"state": state})
		fmt.Fprintf(w, "event: end\ndata: %s\n\n", b)
		if flusher != nil {
			flusher.Flush()
		}
	}
}

// writerFunc adapts emit to an io.Writer.
type writerFunc func([]byte) error

func (f writerFunc) Write(p []byte) (int, error) { return len(p), f(p) }

// storedLog sends a finished job's kept log, if there is one.
func (a *Agent) storedLog(ctx context.Context, j jobs.Job, emit func([]byte) error) bool {
	rc, _, err := a.broker.GetFile(ctx, jobs.OutputObject(j.ID, "job.log"))
	if err != nil {
		return false
	}
	defer rc.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := rc.Read(buf)
		if n > 0 && emit(buf[:n]) != nil {
			return true
		}
		if err != nil {
			return true
		}
	}
}

func (a *Agent) files(w http.ResponseWriter, r *http.Request, _ auth.Token) {
	if j, ok := a.job(w, r); ok {
		files := j.Outputs
		if files == nil {
			files = []jobs.Output{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"files": files})
	}
}

// file serves one output. Only names the job lists can be fetched, so a
// crafted name cannot reach another job's objects.
func (a *Agent) file(w http.ResponseWriter, r *http.Request, _ auth.Token) {
	j, ok := a.job(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	var out *jobs.Output
	for i := range j.Outputs {
		if j.Outputs[i].Name == name {
			out = &j.Outputs[i]
		}
	}
	if out == nil {
		auth.WriteError(w, http.StatusNotFound, fmt.Sprintf("job %s has no file %q; GET /api/v1/jobs/%s/files lists them", j.ID, name, j.ID))
		return
	}
	rc, size, err := a.broker.GetFile(r.Context(), jobs.OutputObject(j.ID, name))
	if err != nil {
		auth.WriteError(w, http.StatusNotFound, err.Error())
		return
	}
	defer rc.Close()
	ct := "application/octet-stream"
	switch {
	case strings.HasSuffix(name, ".json"), strings.HasSuffix(name, ".jsonl"):
		ct = "application/json"
	case strings.HasSuffix(name, ".log"):
		ct = "text/plain; charset=utf-8"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(name)}))
	if raw, err := hex.DecodeString(out.SHA256); err == nil {
		w.Header().Set("Digest", "sha-256="+base64.StdEncoding.EncodeToString(raw)) // RFC 3230
	}
	io.Copy(w, rc)
}

// hook takes a push webhook. It needs no token: the delivery is
// authenticated by its HMAC signature (GitHub) or secret token (GitLab).
// Failures are limited per hook and sender address (unknown hook names
// on a route of their own), and an authentic delivery is taken even from
// a limited address: forges send every customer's deliveries from one
// pool of addresses, so anyone's bad deliveries must not lock out ours.
func (a *Agent) hook(w http.ResponseWriter, r *http.Request) {
	ip := auth.ClientIP(r)
	limited := func(route string) {
		w.Header().Set("Retry-After", strconv.Itoa(int(a.auth.Limiter.RetryAfter(route, ip).Seconds())+1))
		auth.WriteError(w, http.StatusTooManyRequests, "too many failed deliveries from this address; retry later")
	}
	h, ok := a.hooks[r.PathValue("name")]
	if !ok {
		const route = "hooks"
		a.metrics.webhook("", hookUnknown)
		if !a.auth.Limiter.Allowed(route, ip) {
			limited(route)
			return
		}
		a.auth.Limiter.Fail(route, ip)
		auth.WriteError(w, http.StatusNotFound, fmt.Sprintf("no webhook %q on this agent", r.PathValue("name")))
		return
	}
	route := "hook:" + h.Name
	push, err := webhook.Parse(r, h, maxWebhookBody)
	var ig *webhook.IgnoredError
	switch {
	case errors.As(err, &ig):
		a.metrics.webhook(h.Name, hookIgnored)
		writeJSON(w, http.StatusAccepted, map[string]string{"ignored": ig.Reason})
		return
	case err != nil:
		status := webhook.HTTPStatus(err)
		if status == http.StatusUnauthorized {
			if !a.auth.Limiter.Allowed(route, ip) {
				a.metrics.webhook(h.Name, hookLimited)
				limited(route)
				return
			}
			a.auth.Limiter.Fail(route, ip)
		}
		a.metrics.webhook(h.Name, hookRefused)
		a.log.Warn("webhook delivery refused", "hook", h.Name, "status", status, "error", err)
		auth.WriteError(w, status, err.Error())
		return
	}
	now := time.Now().UTC()
	job := jobs.Job{
		ID: jobs.NewID(now), Created: now, Pipeline: h.PipelinePath(),
		Source:    jobs.Source{Kind: "git", Repository: push.Repository, Ref: push.Ref, Commit: push.Commit},
		Trigger:   jobs.Trigger{Kind: string(push.Provider), Hook: h.Name, Delivery: push.DeliveryID, Pusher: push.Pusher, PullRequest: push.PullRequest},
		Untrusted: push.Fork,
	}
	// A redelivery has the delivery ID of the first; a replay of a
	// captured delivery under a new ID has its body (the signature covers
	// the body only): either is the job the first one queued.
	dedup := []string{jobs.BodyKey(string(push.Provider) + ":" + h.Name + ":" + push.BodySHA256)}
	if push.DeliveryID != "" {
		dedup = append(dedup, jobs.DeliveryKey(string(push.Provider)+":"+h.Name+":"+push.DeliveryID))
	}
	id := job.ID
	job, spooled, err := a.submitOrSpool(r.Context(), job, nil, dedup...)
	if err != nil {
		auth.WriteError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	switch {
	case spooled:
		a.metrics.webhook(h.Name, hookSpooled)
	case job.ID != id:
		a.metrics.webhook(h.Name, hookDuplicate)
	default:
		a.metrics.webhook(h.Name, hookQueued)
		if a.cancelSupersededHooks[h.Name] {
			go a.cancelSuperseded(job)
		}
	}
	a.log.Info("webhook queued a job", "hook", h.Name, "job", job.ID, "ref", push.Ref, "commit", push.Commit, "spooled", spooled)
	writeJSON(w, http.StatusAccepted, a.submittedBody(job, spooled))
}
