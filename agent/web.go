package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/cleanroom-ci/cleanroom/agent/auth"
	"github.com/cleanroom-ci/cleanroom/agent/jobs"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
)

// The page is server-rendered from embedded templates with one small
// script and stylesheet, so the agent needs no build step and the browser
// loads nothing from anywhere but the agent.
//
//go:embed web/templates/*.html web/static/*
var webFS embed.FS

// webCSP allows only the agent's own script, styles and connections: the
// page shows text from builds (logs, file names, egress URLs) and nothing
// of it may ever run.
const webCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'"

// Limits on what a job page reads of a job's egress log: a step may make
// many requests, and the page must stay quick to render.
const (
	webMaxEgressBytes = 8 << 20
	webMaxEgressShown = 1000
	webMaxLoginBody   = 4 << 10
	webListRefresh    = 5
	webListLimit      = 200
)

var (
	webPages     = map[string]*template.Template{}
	webStaticSum = map[string]string{} // file name → webShort content hash, for cache-busting URLs
)

func init() {
	funcs := template.FuncMap{"static": webStaticURL, "list": func(s ...string) []string { return s }}
	base := template.Must(template.New("base.html").Funcs(funcs).ParseFS(webFS, "web/templates/base.html"))
	for _, p := range []string{"list", "job", "login", "message"} {
		webPages[p] = template.Must(template.Must(base.Clone()).ParseFS(webFS, "web/templates/"+p+".html"))
	}
	ents, _ := fs.ReadDir(webFS, "web/static")
	for _, e := range ents {
		b, _ := webFS.ReadFile("web/static/" + e.Name())
		sum := sha256.Sum256(b)
		webStaticSum[e.Name()] = hex.EncodeToString(sum[:6])
	}
}

// webStaticURL names an embedded file with its content hash, so that the
// files can be cached for long and an upgraded agent's are still loaded.
func webStaticURL(name string) string {
	return "/static/" + name + "?v=" + webStaticSum[name]
}

// webStatic serves the embedded script and stylesheet, and nothing else
// (no directory listing). Their URLs carry a content hash, so they may be
// cached for long.
func webStatic(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, ok := webStaticSum[name]; !ok {
		http.NotFound(w, r)
		return
	}
	b, err := webFS.ReadFile("web/static/" + name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	ct := "text/plain; charset=utf-8"
	switch path.Ext(name) {
	case ".css":
		ct = "text/css; charset=utf-8"
	case ".js":
		ct = "text/javascript; charset=utf-8"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Cache-Control", "public, max-age=86400")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

// registerWeb adds the web page's routes.
func (a *Agent) registerWeb(mux *http.ServeMux) {
	mux.HandleFunc("GET /static/{name}", webStatic)
	mux.Handle("GET /{$}", a.webPage(a.webListPage))
	mux.Handle("GET /jobs/{id}", a.webPage(a.webJobPage))
	mux.HandleFunc("GET /login", a.webLoginForm)
	// Login and logout change the session: refuse them from other
	// origins (on top of the SameSite=Strict cookie).
	cop := http.NewCrossOriginProtection()
	mux.Handle("POST /login", cop.Handler(http.HandlerFunc(a.webLoginPost)))
	mux.Handle("POST /logout", cop.Handler(http.HandlerFunc(a.webLogout)))
	// Cancel and re-run from the job page: cross-origin requests are
	// refused, the cookie is SameSite=Strict, and the token's scope is
	// checked as the API checks it.
	mux.Handle("POST /jobs/{id}/cancel", cop.Handler(a.webPage(a.webCancel)))
	mux.Handle("POST /jobs/{id}/rerun", cop.Handler(a.webPage(a.webRerun)))
}

func (a *Agent) webAction(w http.ResponseWriter, r *http.Request, tok auth.Token, act func(jobs.Job) (string, error)) {
	fail := func(status int, msg string) {
		a.webRender(w, status, "message", webMessage{webChrome: webChrome{Title: "Not done", Agent: a.id, User: tok.Name}, Message: msg})
	}
	if !tok.Scope.Allows(auth.ScopeSubmit) {
		fail(http.StatusForbidden, fmt.Sprintf("Token %q has scope %s: cancelling and re-running need submit.", tok.Name, tok.Scope))
		return
	}
	j, _, err := a.broker.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		fail(http.StatusNotFound, "There is no job "+r.PathValue("id")+".")
		return
	}
	to, err := act(j)
	if err != nil {
		fail(http.StatusConflict, err.Error())
		return
	}
	http.Redirect(w, r, "/jobs/"+to, http.StatusSeeOther)
}

func (a *Agent) webCancel(w http.ResponseWriter, r *http.Request, tok auth.Token) {
	a.webAction(w, r, tok, func(j jobs.Job) (string, error) {
		if !mayCancel(tok, j) {
			return "", errors.New("Only the token that submitted this job, or an admin token, may cancel it.")
		}
		if _, err := a.requestCancel(r.Context(), j.ID, "token "+tok.Name); errors.Is(err, errAlreadyFinished) {
			return "", fmt.Errorf("Job %s already finished (%s).", j.ID, j.State)
		} else if err != nil {
			return "", err
		}
		a.log.Info("job cancel requested", "job", j.ID, "by", "token "+tok.Name, "from", "web")
		return j.ID, nil
	})
}

func (a *Agent) webRerun(w http.ResponseWriter, r *http.Request, tok auth.Token) {
	a.webAction(w, r, tok, func(j jobs.Job) (string, error) {
		nj, err := a.rerun(r.Context(), j, tok)
		if err != nil {
			return "", err
		}
		a.log.Info("job re-run", "job", nj.ID, "of", j.ID, "token", tok.Name, "from", "web")
		return nj.ID, nil
	})
}

func (a *Agent) webCookieName() string {
	if a.auth.CookieName != "" {
		return a.auth.CookieName
	}
	return auth.DefaultCookieName
}

// webPage wraps a page handler: without a valid session the browser is sent
// to the login form, which brings it back afterwards.
func (a *Agent) webPage(next func(http.ResponseWriter, *http.Request, auth.Token)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, status, err := a.auth.Check(r, auth.ScopeRead)
		switch status {
		case http.StatusOK:
			next(w, r, tok)
		case http.StatusTooManyRequests:
			a.webRenderLogin(w, r, http.StatusTooManyRequests, err.Error())
		default:
			if _, cerr := r.Cookie(a.webCookieName()); cerr == nil {
				// A revoked or unknown token: drop it, so that the next
				// page load does not count as one more failed attempt.
				a.webClearCookie(w, r)
			}
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
		}
	})
}

func (a *Agent) webRender(w http.ResponseWriter, status int, page string, data any) {
	var buf bytes.Buffer
	if err := webPages[page].ExecuteTemplate(&buf, "base.html", data); err != nil {
		a.log.Error("rendering the web page failed", "page", page, "error", err)
		http.Error(w, "internal error rendering the page", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", webCSP)
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// webChrome is what every page's frame shows.
type webChrome struct {
	Title   string
	Agent   string
	User    string // token name; empty on the login page
	Refresh int    // seconds; 0: none
}

// ---- login ----

type webLogin struct {
	webChrome
	Next  string
	Error string
}

// webNext keeps a post-login redirect on this site: a path, never
// "//host" or a URL.
func webNext(s string) string {
	if !strings.HasPrefix(s, "/") || strings.HasPrefix(s, "//") {
		return "/"
	}
	// Browsers drop tabs and newlines from URLs and read a backslash as
	// "/", which would turn "/<tab>/host" or "/<backslash>host" into
	// "//host": another site.
	for _, c := range s {
		if c < 0x20 || c == 0x7f || c == '\\' {
			return "/"
		}
	}
	return s
}

func (a *Agent) webLoginForm(w http.ResponseWriter, r *http.Request) {
	a.webRenderLogin(w, r, http.StatusOK, "")
}

func (a *Agent) webRenderLogin(w http.ResponseWriter, r *http.Request, status int, msg string) {
	if status == http.StatusTooManyRequests && a.auth.Limiter != nil {
		w.Header().Set("Retry-After", strconv.Itoa(int(a.auth.Limiter.RetryAfter(auth.APIRoute, auth.ClientIP(r))/time.Second)+1))
	}
	next := r.URL.Query().Get("next")
	if r.Method == http.MethodPost {
		next = r.PostFormValue("next")
	}
	a.webRender(w, status, "login", webLogin{webChrome: webChrome{Title: "Sign in", Agent: a.id}, Next: webNext(next), Error: msg})
}

// webLoginPost checks a token typed into the form the way the API checks a
// bearer token (the same store, the same failure limit) and
// keeps it in an HttpOnly cookie.
func (a *Agent) webLoginPost(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, webMaxLoginBody)
	if err := r.ParseForm(); err != nil {
		a.webRenderLogin(w, r, http.StatusBadRequest, "the form could not be read")
		return
	}
	ip := auth.ClientIP(r)
	secret := strings.TrimSpace(r.PostFormValue("token"))
	if secret == "" {
		a.webRenderLogin(w, r, http.StatusBadRequest, "enter an API token")
		return
	}
	// As for bearer tokens: a valid token signs in even from a limited
	// address; a wrong one from there gets 429.
	tok, ok := a.auth.Store.Authenticate(secret)
	if !ok {
		if l := a.auth.Limiter; l != nil {
			if wait := l.RetryAfter(auth.APIRoute, ip); wait > 0 {
				a.metrics.authFailure(true)
				a.webRenderLogin(w, r, http.StatusTooManyRequests, fmt.Sprintf("too many failed attempts from this address; retry in %ds", int(wait/time.Second)+1))
				return
			}
			l.Fail(auth.APIRoute, ip)
			a.metrics.authFailure(false)
			if !l.Allowed(auth.APIRoute, ip) {
				a.log.Warn("address limited after repeated failed web logins", "remote", ip)
			}
		}
		a.log.Debug("web login failed", "remote", ip)
		a.webRenderLogin(w, r, http.StatusUnauthorized, "invalid or revoked token")
		return
	}
	if !tok.Scope.Allows(auth.ScopeRead) {
		a.webRenderLogin(w, r, http.StatusForbidden, fmt.Sprintf("token %q has scope %s, which cannot read jobs", tok.Name, tok.Scope))
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: a.webCookieName(), Value: secret, Path: "/",
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	a.log.Info("web login", "token", tok.Name, "remote", ip)
	http.Redirect(w, r, webNext(r.PostFormValue("next")), http.StatusSeeOther)
}

func (a *Agent) webLogout(w http.ResponseWriter, r *http.Request) {
	a.webClearCookie(w, r)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

func (a *Agent) webClearCookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{
		Name: a.webCookieName(), Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
}

// ---- job list ----

// webJobRow is a job as the list (and the job page's header) shows it.
type webJobRow struct {
	ID          string
	State       string
	StateClass  string // a state the stylesheet knows, or "unknown"
	Source      string
	SourceTitle string
	Trigger     string
	Created     string
	CreatedISO  string
	Duration    string
	Attempt     int
	Pipeline    string
	// Branch is the branch, tag or pull request built ("" for uploads).
	Branch    string
	Untrusted bool
}

type webList struct {
	webChrome
	Jobs  []webJobRow
	Error string
	// Filter is the list's filter as the form shows it; Older links to
	// the next page.
	Filter   webFilter
	Filtered bool
	Older    string
}

type webFilter struct{ State, Ref, Hook string }

func (a *Agent) webListPage(w http.ResponseWriter, r *http.Request, tok auth.Token) {
	d := webList{webChrome: webChrome{Title: "Jobs", Agent: a.id, User: tok.Name, Refresh: webListRefresh}}
	q := r.URL.Query()
	d.Filter = webFilter{State: q.Get("state"), Ref: q.Get("ref"), Hook: q.Get("hook")}
	f, err := parseJobFilter(q)
	var list []jobs.Job
	var next string
	if err != nil {
		d.Error = err.Error()
	} else if list, next, err = a.broker.ListPage(r.Context(), f.before, webListLimit, f.keep); err != nil {
		d.Error = "the job list is unavailable: " + err.Error()
	}
	d.Filtered = f.active()
	if next != "" {
		q.Set("before", next)
		d.Older = "/?" + q.Encode()
	}
	now := time.Now()
	for _, j := range list {
		d.Jobs = append(d.Jobs, webRow(j, now))
	}
	a.webRender(w, http.StatusOK, "list", d)
}

func webRow(j jobs.Job, now time.Time) webJobRow {
	r := webJobRow{
		ID: j.ID, State: j.State, StateClass: webState(j.State), Attempt: j.Attempt, Pipeline: j.Pipeline,
		Created: j.Created.UTC().Format("2006-01-02 15:04:05Z"), CreatedISO: j.Created.UTC().Format(time.RFC3339),
		Trigger: webTrigger(j.Trigger), Branch: webBranch(j), Untrusted: j.Untrusted,
	}
	switch j.Source.Kind {
	case "git":
		repo := strings.TrimPrefix(strings.TrimPrefix(j.Source.Repository, "https://"), "http://")
		at := j.Source.Ref
		if j.Source.Commit != "" {
			at = webShort(j.Source.Commit, 12)
		}
		r.Source = repo + "@" + at
		r.SourceTitle = strings.TrimSpace(j.Source.Repository + " " + j.Source.Ref + " " + j.Source.Commit)
	case "tarball":
		r.Source = "tarball sha256:" + webShort(j.Source.SHA256, 12) + "…"
		r.SourceTitle = fmt.Sprintf("sha256:%s, %s", j.Source.SHA256, webBytes(j.Source.Size))
	default:
		r.Source = j.Source.Kind
	}
	switch {
	case j.Started.IsZero():
		r.Duration = "–"
	case j.Finished.IsZero():
		r.Duration = webDuration(now.Sub(j.Started))
	default:
		r.Duration = webDuration(j.Finished.Sub(j.Started))
	}
	return r
}

// webBranch names what a job built as people say it: a branch, a tag, a
// pull or merge request.
func webBranch(j jobs.Job) string {
	ref := j.Source.Ref
	switch {
	case j.Trigger.PullRequest > 0 && j.Trigger.Kind == "gitlab":
		return fmt.Sprintf("!%d", j.Trigger.PullRequest)
	case j.Trigger.PullRequest > 0:
		return fmt.Sprintf("#%d", j.Trigger.PullRequest)
	case strings.HasPrefix(ref, "refs/heads/"):
		return strings.TrimPrefix(ref, "refs/heads/")
	case strings.HasPrefix(ref, "refs/tags/"):
		return "tag " + strings.TrimPrefix(ref, "refs/tags/")
	}
	return ref
}

// webState is the job's state if it is one the stylesheet knows, so a
// state from a newer agent on the same cluster still renders sensibly.
func webState(s string) string {
	switch s {
	case jobs.StateQueued, jobs.StateRunning, jobs.StateSucceeded, jobs.StateFailed, jobs.StateError, jobs.StateCancelled:
		return s
	}
	return "unknown"
}

func webTrigger(t jobs.Trigger) string {
	switch t.Kind {
	case "api":
		if t.Token != "" {
			return "api (" + t.Token + ")"
		}
		return "api"
	case "github", "gitlab":
		s := t.Kind + " push"
		if t.Pusher != "" {
			s += " by " + t.Pusher
		}
		if t.Hook != "" {
			s += " (" + t.Hook + ")"
		}
		return s
	}
	return t.Kind
}

func webShort(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func webDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "–"
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}

func webBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// ---- job page ----

type webFile struct {
	Name   string
	URL    string
	Size   string
	SHA256 string
	Bundle *webFile
}

type webStep struct {
	Name     string
	Status   string
	Class    string
	ExitCode int
	Duration string
	Denied   int
}

type webEgress struct {
	Events    []egress.Event
	Total     int
	Allowed   int
	Denied    int
	Truncated bool
	Error     string
}

type webJob struct {
	webChrome
	Job    jobs.Job
	Row    webJobRow
	Live   bool
	LogURL string
	// CanCancel and CanRerun show the buttons the token may use.
	CanCancel, CanRerun bool
	Steps               []webStep
	FailedStep          string
	Artifacts           []webFile
	Outputs             []webFile
	Egress              *webEgress
	Provenance          *webFile
	Bundles             []webFile
	SignedBy            string
	VerifyCmd           string
	VerifyNote          string
}

func (a *Agent) webJobPage(w http.ResponseWriter, r *http.Request, tok auth.Token) {
	id := r.PathValue("id")
	notFound := func(msg string) {
		a.webRender(w, http.StatusNotFound, "message", webMessage{webChrome: webChrome{Title: "Not found", Agent: a.id, User: tok.Name}, Message: msg})
	}
	if !jobs.ValidID(id) {
		notFound(fmt.Sprintf("%q is not a job ID.", id))
		return
	}
	j, _, err := a.broker.Get(r.Context(), id)
	if errors.Is(err, jobs.ErrNotFound) {
		notFound("There is no job " + id + ".")
		return
	}
	if err != nil {
		a.webRender(w, http.StatusServiceUnavailable, "message", webMessage{webChrome: webChrome{Title: "Unavailable", Agent: a.id, User: tok.Name}, Message: "The job state is unavailable: " + err.Error()})
		return
	}
	d := webJob{
		webChrome: webChrome{Title: "Job " + j.ID, Agent: a.id, User: tok.Name},
		Job:       j, Row: webRow(j, time.Now()), Live: !jobs.Terminal(j.State),
		LogURL:    "/api/v1/jobs/" + j.ID + "/log",
		CanCancel: !jobs.Terminal(j.State) && mayCancel(tok, j),
		CanRerun:  jobs.Terminal(j.State) && tok.Scope.Allows(auth.ScopeSubmit),
	}
	outputs := map[string]webFile{}
	for _, o := range j.Outputs {
		f := webFile{Name: o.Name, URL: webFileURL(j.ID, o.Name), Size: webBytes(o.Size), SHA256: o.SHA256}
		outputs[o.Name] = f
		if !strings.HasPrefix(o.Name, "artifacts/") {
			d.Outputs = append(d.Outputs, f)
		}
	}
	if res := j.Result; res != nil {
		d.FailedStep, d.SignedBy = res.FailedStep, res.SignedBy
		for _, s := range res.Steps {
			d.Steps = append(d.Steps, webStep{Name: s.Name, Status: s.Status, Class: webStepClass(s.Status), ExitCode: s.ExitCode,
				Duration: webDuration(time.Duration(s.Seconds * float64(time.Second))), Denied: s.Denied})
		}
		bundles := map[string]webFile{} // base name → output
		for _, o := range j.Outputs {
			if strings.HasSuffix(o.Name, ".sigstore.json") {
				bundles[path.Base(o.Name)] = outputs[o.Name]
			}
		}
		for _, art := range res.Artifacts {
			f, ok := outputs["artifacts/"+art.Name]
			if !ok {
				f = webFile{}
			}
			f.Name, f.SHA256 = art.Name, art.SHA256
			if b, ok := bundles[path.Base(art.Name)+".sigstore.json"]; ok {
				f.Bundle = &b
			}
			d.Artifacts = append(d.Artifacts, f)
		}
		if p, ok := outputs[res.Provenance]; ok && res.Provenance != "" {
			d.Provenance = &p
		}
		for _, b := range res.Bundles {
			f, ok := outputs[b] // output names, as stored
			if !ok {
				f = webFile{Name: b}
			}
			d.Bundles = append(d.Bundles, f)
		}
		d.VerifyCmd, d.VerifyNote = a.webVerifyCommand(res)
	}
	if _, ok := outputs["egress.jsonl"]; ok {
		d.Egress = a.webEgressLog(r.Context(), j.ID)
	}
	a.webRender(w, http.StatusOK, "job", d)
}

func webStepClass(status string) string {
	switch status {
	case "ok":
		return "succeeded"
	case "skipped":
		return "queued"
	case "cancelled":
		return "cancelled"
	}
	return "failed"
}

// webFileURL is the API download URL of an output, each path segment
// escaped (names come from the build).
func webFileURL(id, name string) string {
	segs := strings.Split(name, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return "/api/v1/jobs/" + id + "/files/" + strings.Join(segs, "/")
}

// webEgressLog reads the job's recorded egress decisions.
func (a *Agent) webEgressLog(ctx context.Context, id string) *webEgress {
	v := &webEgress{}
	rc, _, err := a.broker.GetFile(ctx, jobs.OutputObject(id, "egress.jsonl"))
	if err != nil {
		v.Error = "the egress log could not be read: " + err.Error()
		return v
	}
	defer rc.Close()
	sc := bufio.NewScanner(io.LimitReader(rc, webMaxEgressBytes))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var ev egress.Event
		if json.Unmarshal(sc.Bytes(), &ev) != nil {
			continue
		}
		v.Total++
		if ev.Decision == egress.DecisionDeny {
			v.Denied++
		} else {
			v.Allowed++
		}
		if len(v.Events) < webMaxEgressShown {
			v.Events = append(v.Events, ev)
		} else {
			v.Truncated = true
		}
	}
	if err := sc.Err(); err != nil {
		v.Truncated = true
	}
	return v
}

// webVerifyCommand is the `cleanroom verify` line that checks the job's
// downloaded artifacts against its provenance, for the way it was signed.
// Downloads are saved under their base names, and verify matches
// artifacts by digest, so base names are what the command names.
func (a *Agent) webVerifyCommand(res *jobs.Result) (cmd, note string) {
	if res.Provenance == "" {
		return "", ""
	}
	if len(res.Artifacts) == 0 {
		return "", "This job has no artifacts to verify."
	}
	parts := []string{"cleanroom", "verify"}
	for _, art := range res.Artifacts {
		parts = append(parts, webShellQuote(path.Base(art.Name)))
	}
	bundle := ""
	for _, b := range res.Bundles {
		if b == "provenance.sigstore.json" {
			bundle = b
		}
	}
	switch {
	case bundle == "":
		parts = append(parts, "--provenance", webShellQuote(res.Provenance))
		note = "The provenance is not signed: this checks the artifacts against it, not who made it."
	case strings.HasPrefix(res.SignedBy, "key:"):
		parts = append(parts, "--provenance-bundle", bundle, "--key", "cosign.pub")
		note = "cosign.pub is the public key of the agent's signing key (" + res.SignedBy + ")."
	default:
		root := "trusted_root.json"
		if a.cfg.Signing.TrustedRoot != "" {
			root = path.Base(a.cfg.Signing.TrustedRoot)
		}
		parts = append(parts, "--provenance-bundle", bundle, "--trusted-root", webShellQuote(root),
			"--certificate-identity", webShellQuote(res.SignedBy), "--certificate-oidc-issuer", `"$OIDC_ISSUER"`)
		note = "Set OIDC_ISSUER to the issuer of the agent's identity token."
	}
	return strings.Join(parts, " "), "Download the files above into one directory and run this there. " + note
}

var webShellSafe = regexp.MustCompile(`^[A-Za-z0-9_./:@%+=,-]+$`)

func webShellQuote(s string) string {
	if webShellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ---- messages ----

type webMessage struct {
	webChrome
	Message string
}
