package source

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/cleanroom-ci/cleanroom/runner/manifest"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
)

// DefaultGitTimeout bounds a whole FetchGit unless GitOptions.Timeout says
// otherwise.
const DefaultGitTimeout = 5 * time.Minute

// GitOptions configures FetchGit.
type GitOptions struct {
	// Allow is the git allowlist (source.allow), in the grammar of
	// egress.ParseRule: "git.example.org", "*.example.org",
	// "127.0.0.1:8080", ... Empty allows nothing.
	Allow []string
	// AllowHTTP also accepts plain http remotes (loopback test servers,
	// private mirrors); by default only https is.
	AllowHTTP bool
	// AuthHeader is an optional HTTP header sent to the remote's host,
	// e.g. "Authorization: Basic ...". It reaches git through its
	// environment, never its arguments (which any local user can list),
	// and is never logged.
	AuthHeader string
	// UpstreamTLS verifies https remotes (its RootCAs, typically); nil
	// uses the host's roots.
	UpstreamTLS *tls.Config
	Logger      hclog.Logger
	// Timeout bounds the whole fetch (default DefaultGitTimeout).
	Timeout time.Duration
}

// Git describes a fetched checkout.
type Git struct {
	// Remote is the remote with credentials removed; it is also what
	// the checkout's remote.origin.url says, so that the provenance
	// records it.
	Remote string
	// Ref is the ref asked for ("" when fetched by commit alone).
	Ref string
	// Commit is the commit checked out (HEAD).
	Commit string
	// Events are the egress proxy's records of every request git made.
	Events []egress.Event
}

// FetchGit fetches one commit of remote into dir (which must not exist or
// be empty) and checks it out detached, with no history beyond it.
//
// With commit set, that commit is fetched (falling back to ref when the
// server does not serve commits by id) and HEAD must end up on it. With
// only ref, its tip is fetched.
//
// git runs with a clean environment and configuration, no prompting, no
// hooks, no submodules, object checking on, and only https (and http with
// AllowHTTP) transports; its only way out is an egress proxy run here for
// this fetch, enforcing Allow exactly as for a build step: names are
// resolved once, special addresses need an IP rule, the TLS SNI must match
// the tunnel, and every request is recorded. The proxy terminates https
// with a throwaway CA that only this git trusts and verifies the real
// remote with UpstreamTLS, so every request is recorded with its URL.
//
// On error dir may be left partially written: the caller deletes it.
func FetchGit(ctx context.Context, remote, ref, commit, dir string, o GitOptions) (Git, error) {
	u, commit, dir, err := checkFetch(remote, ref, commit, dir, o)
	if err != nil {
		return Git{}, err
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultGitTimeout
	}
	log := o.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	log = log.Named("source")
	gitBin, err := exec.LookPath("git")
	if err != nil {
		return Git{}, fmt.Errorf("the git binary is needed to fetch sources: %w", err)
	}
	policy, err := egress.NewPolicy(o.Allow)
	if err != nil {
		return Git{}, fmt.Errorf("git allowlist (source.allow): %w", err)
	}

	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	home, err := os.MkdirTemp("", "cleanroom-git-")
	if err != nil {
		return Git{}, err
	}
	defer os.RemoveAll(home)
	fp, err := startFetchProxy(ctx, policy, home, o, log)
	if err != nil {
		return Git{}, err
	}
	defer fp.stop()

	g := &gitRun{
		bin:     gitBin,
		dir:     dir,
		proxy:   fp.url,
		home:    home,
		caFile:  fp.caFile,
		http:    o.AllowHTTP,
		auth:    o.AuthHeader,
		authURL: (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: "/"}).String(),
		secrets: secretsOf(u, o.AuthHeader),
		remote:  remote,
	}
	redacted := manifest.RedactURL(remote)
	log.Info("fetching source", "remote", redacted, "ref", ref, "commit", commit)

	res := Git{Remote: redacted, Ref: ref}
	fail := func(step string, err error) (Git, error) {
		fp.stop()
		res.Events = fp.rec.events()
		if d := denial(policy, fp.proxy.Denials()); d != nil {
			return res, d
		}
		if ctx.Err() != nil {
			return res, fmt.Errorf("git %s of %s: timed out after %s", step, redacted, o.Timeout)
		}
		return res, fmt.Errorf("git %s of %s: %w", step, redacted, err)
	}
	head, failedStep, err := g.checkout(ctx, ref, commit, fp.proxy, log)
	if err != nil {
		return fail(failedStep, err)
	}
	res.Commit = head.commit
	// An annotated tag's id names the commit it points to too.
	if commit != "" && commit != head.commit && commit != head.object {
		fp.stop()
		res.Events = fp.rec.events()
		if ref == "" {
			return res, fmt.Errorf("git %s: fetched %s, not the requested commit %s", redacted, head.commit, commit)
		}
		return res, fmt.Errorf("git %s: %s is at %s, not at the requested commit %s (pushed again since?)", redacted, ref, head.commit, commit)
	}
	if failedStep, err := g.finish(ctx, ref, head.commit, redacted); err != nil {
		return fail(failedStep, err)
	}
	fp.stop()
	res.Events = fp.rec.events()
	log.Info("fetched source", "remote", redacted, "commit", head.commit, "requests", len(res.Events))
	return res, nil
}

// checkFetch checks FetchGit's arguments before anything runs; it returns
// the parsed remote, the commit in lower case and dir made absolute.
func checkFetch(remote, ref, commit, dir string, o GitOptions) (*url.URL, string, string, error) {
	u, err := checkRemote(remote, o.AllowHTTP)
	if err != nil {
		return nil, "", "", err
	}
	if ref != "" {
		if err := checkRef(ref); err != nil {
			return nil, "", "", err
		}
	}
	if commit != "" {
		if !isCommitID(commit) {
			return nil, "", "", fmt.Errorf("git commit %q: want 40 (or 64) hex digits", commit)
		}
		commit = strings.ToLower(commit)
	}
	if ref == "" && commit == "" {
		return nil, "", "", errors.New("git fetch needs a ref or a commit")
	}
	if h := o.AuthHeader; h != "" {
		if strings.ContainsAny(h, "\r\n\x00") || !strings.Contains(h, ":") {
			return nil, "", "", errors.New("git auth header: want one \"Name: value\" line")
		}
	}
	if dir == "" {
		return nil, "", "", errors.New("git fetch: no directory")
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, "", "", err
	}
	if err := emptyDir(dir); err != nil {
		return nil, "", "", err
	}
	return u, commit, dir, nil
}

// fetchProxy is the egress proxy of one fetch, on loopback, terminating
// https with a throwaway CA (caFile) that only this fetch's git trusts.
type fetchProxy struct {
	ctx     context.Context
	proxy   *egress.Proxy
	rec     *recorder
	url     string
	caFile  string
	served  chan struct{}
	stopped bool
}

func startFetchProxy(ctx context.Context, policy *egress.Policy, home string, o GitOptions, log hclog.Logger) (*fetchProxy, error) {
	ca, err := egress.NewInspectCA(egress.InspectCAOptions{
		Rules:    o.Allow,
		Validity: o.Timeout + time.Hour,
		Name:     "cleanroom agent source fetch",
	})
	if err != nil {
		return nil, err
	}
	fp := &fetchProxy{ctx: ctx, rec: &recorder{}, caFile: filepath.Join(home, "proxy-ca.pem"), served: make(chan struct{})}
	if err := os.WriteFile(fp.caFile, ca.CertPEM(), 0o600); err != nil {
		return nil, err
	}
	fp.proxy, err = egress.New(egress.Config{
		Step:      "source",
		Policy:    policy,
		Recorder:  fp.rec,
		TLSConfig: o.UpstreamTLS,
		Inspect:   ca,
		Logger:    log,
	})
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	fp.url = "http://" + l.Addr().String()
	go func() {
		defer close(fp.served)
		if err := fp.proxy.Serve(l); err != nil {
			log.Warn("source proxy stopped", "error", err)
		}
	}()
	return fp, nil
}

// stop shuts the proxy down once (later calls do nothing).
func (fp *fetchProxy) stop() {
	if fp.stopped {
		return
	}
	fp.stopped = true
	// git has exited: give the proxy a moment to record the last
	// requests, none at all when the fetch timed out (a hanging
	// upstream would only hold it up).
	grace := 5 * time.Second
	if fp.ctx.Err() != nil {
		grace = 0
	}
	sctx, scancel := context.WithTimeout(context.Background(), grace)
	defer scancel()
	_ = fp.proxy.Shutdown(sctx)
	<-fp.served
}

// fetchedHead is what a checkout ended on: the commit of HEAD, and the
// object fetched (a commit, or an annotated tag naming one).
type fetchedHead struct{ commit, object string }

// checkout initialises the repository, fetches commit (falling back to
// ref) or ref, and checks it out detached. On failure it names the git
// step that failed.
func (g *gitRun) checkout(ctx context.Context, ref, commit string, proxy *egress.Proxy, log hclog.Logger) (fetchedHead, string, error) {
	if err := g.run(ctx, "init", "-q", "--", g.dir); err != nil {
		return fetchedHead{}, "init", err
	}
	fetched := false
	if commit != "" {
		err := g.fetch(ctx, commit)
		if err == nil {
			fetched = true
		} else if ref == "" || len(proxy.Denials()) > 0 || ctx.Err() != nil {
			return fetchedHead{}, "fetch", err
		} else {
			// Servers that refuse a "want" for a commit id that is no
			// ref's tip (old protocol, no allowReachableSHA1InWant)
			// still serve the ref; whether its tip is the commit is
			// checked by the caller.
			log.Debug("fetching the commit by id failed; fetching the ref", "error", err)
		}
	}
	if !fetched {
		if err := g.fetch(ctx, ref); err != nil {
			return fetchedHead{}, "fetch", err
		}
	}
	if err := g.run(ctx, "checkout", "-q", "--detach", "FETCH_HEAD"); err != nil {
		return fetchedHead{}, "checkout", err
	}
	head, err := g.output(ctx, "rev-parse", "--verify", "-q", "HEAD^{commit}")
	if err != nil {
		return fetchedHead{}, "rev-parse", err
	}
	object, err := g.output(ctx, "rev-parse", "--verify", "-q", "FETCH_HEAD")
	if err != nil {
		return fetchedHead{}, "rev-parse", err
	}
	return fetchedHead{commit: head, object: object}, "", nil
}

// finish makes the checkout look as a developer's own does to the
// provenance, and removes what names more than the redacted remote. On
// failure it names the step that failed.
func (g *gitRun) finish(ctx context.Context, ref, head, redacted string) (string, error) {
	// The provenance reads remote.origin.url and HEAD from the checkout.
	if err := g.run(ctx, "config", "remote.origin.url", redacted); err != nil {
		return "config", err
	}
	// A branch build checks out as that branch, so that the provenance
	// records the ref (gitSource reads HEAD's symbolic ref) as it does for
	// a developer's own checkout.
	if branch, ok := strings.CutPrefix(ref, "refs/heads/"); ok && branch != "" {
		if err := g.run(ctx, "update-ref", ref, head); err != nil {
			return "update-ref", err
		}
		if err := g.run(ctx, "symbolic-ref", "HEAD", ref); err != nil {
			return "symbolic-ref", err
		}
	}
	// FETCH_HEAD names the URL fetched from; nothing in .git should
	// carry more than the redacted remote into the build.
	if err := os.Remove(filepath.Join(g.dir, ".git", "FETCH_HEAD")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "cleanup", err
	}
	return "", nil
}

// gitRun runs git commands of one fetch.
type gitRun struct {
	bin, dir, proxy, home, caFile string
	http                          bool
	auth, authURL                 string
	secrets                       []string
	remote                        string
}

func (g *gitRun) fetch(ctx context.Context, what string) error {
	return g.run(ctx, "fetch", "--quiet", "--no-tags", "--no-recurse-submodules", "--depth", "1", "--", g.remote, what)
}

func (g *gitRun) output(ctx context.Context, args ...string) (string, error) {
	var out bytes.Buffer
	if err := g.exec(ctx, &out, args...); err != nil {
		return "", err
	}
	return strings.TrimSpace(out.String()), nil
}

func (g *gitRun) run(ctx context.Context, args ...string) error {
	return g.exec(ctx, nil, args...)
}

func (g *gitRun) exec(ctx context.Context, stdout *bytes.Buffer, args ...string) error {
	protocols := "https"
	if g.http {
		protocols = "https:http"
	}
	cfg := []string{
		// Transports: https (and http when allowed), never file, ssh,
		// ext or a remote helper named by the remote.
		"protocol.allow=never",
		"protocol.https.allow=always",
		"http.proxy=" + g.proxy,
		"http.sslVerify=true",
		"http.sslCAInfo=" + g.caFile,
		"credential.helper=",
		"core.hooksPath=/dev/null",
		"core.fsmonitor=false",
		"submodule.recurse=false",
		"fetch.recurseSubmodules=false",
		"fetch.fsckObjects=true",
		"transfer.fsckObjects=true",
		"gc.auto=0",
		"maintenance.auto=false",
		"init.defaultBranch=main",
		"advice.detachedHead=false",
		"protocol.version=2",
	}
	if g.http {
		cfg = append(cfg, "protocol.http.allow=always")
	}
	argv := make([]string, 0, 2+2*len(cfg)+len(args))
	if args[0] != "init" {
		argv = append(argv, "-C", g.dir)
	}
	for _, c := range cfg {
		argv = append(argv, "-c", c)
	}
	argv = append(argv, args...)

	cmd := exec.CommandContext(ctx, g.bin, argv...)
	cmd.Dir = g.home
	proxyEnv := g.proxy
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + g.home,
		"XDG_CONFIG_HOME=" + g.home,
		"LC_ALL=C",
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_TERMINAL_PROMPT=0",
		"GIT_ALLOW_PROTOCOL=" + protocols,
		"GIT_PROTOCOL_FROM_USER=0",
		"http_proxy=" + proxyEnv,
		"https_proxy=" + proxyEnv,
		"HTTPS_PROXY=" + proxyEnv,
		"all_proxy=" + proxyEnv,
	}
	if g.auth != "" {
		// Scoped to the remote's host (scheme, host, port), so that a
		// redirect elsewhere does not carry it along.
		cmd.Env = append(cmd.Env,
			"GIT_CONFIG_COUNT=1",
			"GIT_CONFIG_KEY_0=http."+g.authURL+".extraHeader",
			"GIT_CONFIG_VALUE_0="+g.auth,
		)
	}
	var stderr tailBuffer
	cmd.Stdout = &stderr
	if stdout != nil {
		cmd.Stdout = stdout
	}
	cmd.Stderr = &stderr
	// git runs helpers (git-remote-https, index-pack) as children: kill
	// the whole group when the context ends, not just git.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(g.redact(stderr.String()))
		if msg == "" {
			return err
		}
		return fmt.Errorf("%v: %s", err, msg)
	}
	return nil
}

// redact removes the remote's credentials and the auth header from git's
// messages.
func (g *gitRun) redact(s string) string {
	if g.remote != "" {
		s = strings.ReplaceAll(s, g.remote, manifest.RedactURL(g.remote))
	}
	for _, sec := range g.secrets {
		s = strings.ReplaceAll(s, sec, "REDACTED")
	}
	return s
}

// secretsOf lists the strings that must never appear in an error.
func secretsOf(u *url.URL, authHeader string) []string {
	var out []string
	add := func(s string) {
		if len(s) >= 4 {
			out = append(out, s)
		}
	}
	if u.User != nil {
		add(u.User.String())
		add(u.User.Username())
		if p, ok := u.User.Password(); ok {
			add(p)
			add(url.QueryEscape(p))
		}
	}
	if _, v, ok := strings.Cut(authHeader, ":"); ok {
		v = strings.TrimSpace(v)
		add(v)
		if _, cred, ok := strings.Cut(v, " "); ok {
			add(strings.TrimSpace(cred))
		}
	}
	return out
}

// denial turns the proxy's refusals into the error a user can act on.
func denial(policy *egress.Policy, ds []egress.Denial) error {
	if len(ds) == 0 {
		return nil
	}
	var msgs []string
	for _, d := range ds {
		host := defaultPort(d.Target)
		if host == "" {
			host = "(unknown)"
		}
		h, p, err := net.SplitHostPort(d.Target)
		port, _ := strconv.Atoi(p)
		switch {
		case d.Hint != "" && err == nil && policy.NeedsResolve(h, port):
			// The name is allowed; what it resolved to is not.
			msgs = append(msgs, fmt.Sprintf("git host %s resolved to an address the agent's git allowlist (source.allow) does not cover; add %q to fetch from it (%s)", host, defaultPort(d.Hint), d.Reason))
		case d.Hint != "":
			msgs = append(msgs, fmt.Sprintf("git host %s is not in the agent's git allowlist (source.allow); add %q to fetch from it (%s)", host, defaultPort(d.Hint), d.Reason))
		default:
			msgs = append(msgs, fmt.Sprintf("git request to %s was refused by the agent's egress proxy: %s", host, d.Reason))
		}
	}
	return errors.New(strings.Join(msgs, "; "))
}

// defaultPort drops ":80" and ":443" from host:port: a rule without a
// port means exactly those two, and reads better.
func defaultPort(hostport string) string {
	h, p, err := net.SplitHostPort(hostport)
	if err != nil || (p != "80" && p != "443") {
		return hostport
	}
	return h
}

// emptyDir creates dir, or accepts it when it exists and is empty: a
// checkout over earlier files would mix them into the build.
func emptyDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if len(names) > 0 {
		return fmt.Errorf("git checkout directory %s is not empty", dir)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// checkRemote accepts an absolute https (or, with allowHTTP, http) URL
// and nothing git could read as an option, a local path or another
// transport.
func checkRemote(remote string, allowHTTP bool) (*url.URL, error) {
	shown := manifest.RedactURL(remote)
	if remote == "" {
		return nil, errors.New("git remote is empty")
	}
	if strings.HasPrefix(remote, "-") {
		return nil, fmt.Errorf("git remote %q starts with \"-\"", shown)
	}
	if strings.IndexFunc(remote, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
		return nil, fmt.Errorf("git remote %q contains whitespace or control characters", shown)
	}
	if !strings.Contains(remote, "://") {
		// scp-like ssh ("git@host:path"), a local path, or "ext::cmd".
		return nil, fmt.Errorf("git remote %q is not a URL; want https://host/owner/repo.git", shown)
	}
	u, err := url.Parse(remote)
	if err != nil {
		return nil, fmt.Errorf("git remote %q: %v", shown, err)
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
	case "http":
		if !allowHTTP {
			return nil, fmt.Errorf("git remote %s is plain http; only https remotes are fetched (unless http is explicitly allowed)", shown)
		}
	case "":
		return nil, fmt.Errorf("git remote %q is not a URL; want https://host/owner/repo.git", shown)
	default:
		return nil, fmt.Errorf("git remote %s uses %s; only https remotes are fetched", shown, u.Scheme)
	}
	if u.Opaque != "" || u.Host == "" || strings.HasPrefix(u.Host, "-") {
		return nil, fmt.Errorf("git remote %q has no host; want https://host/owner/repo.git", shown)
	}
	if u.Fragment != "" {
		return nil, fmt.Errorf("git remote %q has a fragment", shown)
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("git remote %q: invalid port", shown)
		}
	}
	return u, nil
}

// checkRef accepts what could be a ref name ("main", "refs/heads/main",
// "v1.2") and refuses options, refspec syntax and revision expressions.
// It follows git-check-ref-format in spirit; git itself has the last word.
func checkRef(ref string) error {
	bad := func(why string) error { return fmt.Errorf("git ref %q: %s", ref, why) }
	switch {
	case strings.HasPrefix(ref, "-"):
		return bad("starts with \"-\"")
	case len(ref) > 1024:
		return bad("too long")
	case strings.Contains(ref, ".."):
		return bad("contains \"..\"")
	case strings.Contains(ref, "@{") || ref == "@":
		return bad("is a revision expression, not a ref")
	case strings.Contains(ref, "//") || strings.HasPrefix(ref, "/") || strings.HasSuffix(ref, "/"):
		return bad("has an empty path component")
	case strings.HasSuffix(ref, ".") || strings.HasSuffix(ref, ".lock"):
		return bad("ends with \".\" or \".lock\"")
	}
	if i := strings.IndexFunc(ref, func(r rune) bool {
		return r < 0x20 || r == 0x7f || strings.ContainsRune(" ~^:?*[\\+", r)
	}); i >= 0 {
		return bad(fmt.Sprintf("contains %q", ref[i]))
	}
	for _, c := range strings.Split(ref, "/") {
		if strings.HasPrefix(c, ".") {
			return bad("has a component starting with \".\"")
		}
	}
	return nil
}

func isCommitID(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// recorder keeps the proxy's events, with credential-like URL parts
// removed as the runner does for a step's egress log.
type recorder struct {
	mu  sync.Mutex
	evs []egress.Event
}

func (r *recorder) Record(e egress.Event) {
	e.URL = manifest.RedactURL(e.URL)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.evs) < egress.MaxKeptEvents {
		r.evs = append(r.evs, e)
	}
}

func (r *recorder) events() []egress.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]egress.Event(nil), r.evs...)
}

// tailBuffer keeps the last 8 KiB written: enough of git's stderr to show
// the cause.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

const tailMax = 8 << 10

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > tailMax {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-tailMax:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
