package source

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/internal/testenv"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
)

// gitHTTPBackend is Debian git's CGI program.
const gitHTTPBackend = "/usr/lib/git-core/git-http-backend"

// gitServer is a loopback git server: a bare repository served over smart
// HTTP by git http-backend, optionally behind Basic authentication.
type gitServer struct {
	*httptest.Server
	url           string // clone URL
	first, second string // commits; second is main's tip
	tagObject     string // annotated tag v1 (points to second)
	authUser      string
	authPass      string

	mu   sync.Mutex
	auth []string // Authorization headers seen
}

func requireGit(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		testenv.Missing(t, "the git binary on PATH")
	}
	if _, err := os.Stat(gitHTTPBackend); err != nil {
		testenv.Missing(t, gitHTTPBackend+" (Debian's git)")
	}
}

func newGitServer(t *testing.T, tlsServer bool, user, pass string) *gitServer {
	t.Helper()
	requireGit(t)
	root := t.TempDir()
	s := &gitServer{authUser: user, authPass: pass}
	s.first, s.second, s.tagObject = makeRepo(t, filepath.Join(root, "acme", "widget.git"))
	backend := &cgi.Handler{
		Path: gitHTTPBackend,
		Env:  []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"},
		// "not our ref" and the like are expected in some tests.
		Stderr: io.Discard,
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.auth = append(s.auth, r.Header.Get("Authorization"))
		s.mu.Unlock()
		if s.authUser != "" {
			if u, p, ok := r.BasicAuth(); !ok || u != s.authUser || p != s.authPass {
				w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
				http.Error(w, "access denied", http.StatusUnauthorized)
				return
			}
		}
		backend.ServeHTTP(w, r)
	})
	s.Server = httptest.NewUnstartedServer(h)
	// A refused handshake is expected in TestFetchGitHTTPS.
	s.Server.Config.ErrorLog = log.New(io.Discard, "", 0)
	if tlsServer {
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	s.url = s.Server.URL + "/acme/widget.git"
	return s
}

// hostPort is the server's address as an allowlist rule.
func (s *gitServer) hostPort() string {
	u, _ := url.Parse(s.Server.URL)
	return u.Host
}

func makeRepo(t *testing.T, bare string) (first, second, tagObject string) {
	t.Helper()
	work := t.TempDir()
	run := func(dir string, args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "HOME="+work,
			"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.org", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.org")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if err := os.MkdirAll(filepath.Dir(bare), 0o755); err != nil {
		t.Fatal(err)
	}
	run(work, "init", "-q", "--bare", "-b", "main", bare)
	run(work, "init", "-q", "-b", "main", ".")
	write(t, filepath.Join(work, "cleanroom.yaml"), "steps: []\n")
	run(work, "add", ".")
	run(work, "commit", "-q", "-m", "first")
	first = run(work, "rev-parse", "HEAD")
	write(t, filepath.Join(work, "main.txt"), "second\n")
	run(work, "add", ".")
	run(work, "commit", "-q", "-m", "second")
	second = run(work, "rev-parse", "HEAD")
	run(work, "tag", "-a", "-m", "release", "v1")
	tagObject = run(work, "rev-parse", "v1")
	run(work, "push", "-q", bare, "main", "v1")
	return first, second, tagObject
}

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func gitOut(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git %v: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}

func httpOpts(s *gitServer) GitOptions {
	return GitOptions{Allow: []string{s.hostPort()}, AllowHTTP: true, Timeout: time.Minute}
}

func TestFetchGitByRef(t *testing.T) {
	s := newGitServer(t, false, "", "")
	dir := filepath.Join(t.TempDir(), "ws")
	g, err := FetchGit(context.Background(), s.url, "refs/heads/main", "", dir, httpOpts(s))
	if err != nil {
		t.Fatal(err)
	}
	if g.Commit != s.second || g.Ref != "refs/heads/main" || g.Remote != s.url {
		t.Fatalf("got %+v, want commit %s", g, s.second)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "main.txt")); err != nil || string(b) != "second\n" {
		t.Fatalf("main.txt: %q, %v", b, err)
	}
	// What the provenance reads from the checkout.
	if got := gitOut(t, dir, "config", "--get", "remote.origin.url"); got != s.url {
		t.Fatalf("remote.origin.url = %q", got)
	}
	if got := gitOut(t, dir, "rev-parse", "HEAD"); got != s.second {
		t.Fatalf("HEAD = %s", got)
	}
	if got := gitOut(t, dir, "symbolic-ref", "HEAD"); got != "refs/heads/main" {
		t.Fatalf("HEAD refers to %q, want the branch built", got)
	}
	// Shallow: no history beyond the commit.
	if got := gitOut(t, dir, "rev-list", "--count", "HEAD"); got != "1" {
		t.Fatalf("%s commits in the checkout, want 1", got)
	}
	if _, err := os.Stat(filepath.Join(dir, ".git", "FETCH_HEAD")); !os.IsNotExist(err) {
		t.Fatalf("FETCH_HEAD left behind: %v", err)
	}
	checkEvents(t, g.Events, s.hostPort())

	// A short branch name works too.
	g, err = FetchGit(context.Background(), s.url, "main", "", t.TempDir(), httpOpts(s))
	if err != nil || g.Commit != s.second {
		t.Fatalf("fetch of main: %+v, %v", g, err)
	}
}

// checkEvents wants at least the upload-pack POST, allowed by the rule.
func checkEvents(t *testing.T, evs []egress.Event, rule string) {
	t.Helper()
	if len(evs) == 0 {
		t.Fatal("no egress events recorded")
	}
	sawPack := false
	for _, e := range evs {
		if e.Decision != egress.DecisionAllow {
			t.Errorf("event %+v not allowed", e)
		}
		if e.Step != "source" {
			t.Errorf("event step %q", e.Step)
		}
		if strings.HasSuffix(e.URL, "/acme/widget.git/git-upload-pack") && e.Method == http.MethodPost && e.Status == 200 {
			sawPack = true
			if e.Rule != rule || e.SHA256 == "" {
				t.Errorf("upload-pack event %+v: want rule %s and a body hash", e, rule)
			}
		}
	}
	if !sawPack {
		t.Errorf("no upload-pack request among %+v", evs)
	}
}

func TestFetchGitByCommit(t *testing.T) {
	s := newGitServer(t, false, "", "")
	// The tip, with and without a ref.
	for _, ref := range []string{"", "refs/heads/main"} {
		g, err := FetchGit(context.Background(), s.url, ref, s.second, t.TempDir(), httpOpts(s))
		if err != nil || g.Commit != s.second {
			t.Fatalf("ref %q: %+v, %v", ref, g, err)
		}
	}
	// A commit below the tip: protocol v2 serves any reachable commit.
	dir := t.TempDir()
	g, err := FetchGit(context.Background(), s.url, "", s.first, dir, httpOpts(s))
	if err != nil || g.Commit != s.first {
		t.Fatalf("first commit: %+v, %v", g, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "main.txt")); !os.IsNotExist(err) {
		t.Fatal("main.txt exists in the first commit's checkout")
	}
	// An annotated tag's object id stands for the commit it points to.
	g, err = FetchGit(context.Background(), s.url, "refs/tags/v1", s.tagObject, t.TempDir(), httpOpts(s))
	if err != nil || g.Commit != s.second {
		t.Fatalf("tag: %+v, %v", g, err)
	}
	// Upper case is accepted and normalised.
	g, err = FetchGit(context.Background(), s.url, "", strings.ToUpper(s.second), t.TempDir(), httpOpts(s))
	if err != nil || g.Commit != s.second {
		t.Fatalf("upper case: %+v, %v", g, err)
	}
}

func TestFetchGitCommitMismatch(t *testing.T) {
	s := newGitServer(t, false, "", "")
	missing := strings.Repeat("1", 40)
	// The commit does not exist: fetching it by id fails, the ref is
	// fetched instead, and its tip is not the commit.
	_, err := FetchGit(context.Background(), s.url, "refs/heads/main", missing, t.TempDir(), httpOpts(s))
	if err == nil || !strings.Contains(err.Error(), "not at the requested commit "+missing) {
		t.Fatalf("err = %v", err)
	}
	t.Log(err)
	// Without a ref there is nothing to fall back to.
	_, err = FetchGit(context.Background(), s.url, "", missing, t.TempDir(), httpOpts(s))
	if err == nil || !strings.Contains(err.Error(), "git fetch of") {
		t.Fatalf("err = %v", err)
	}
	t.Log(err)
}

func TestFetchGitNotAllowed(t *testing.T) {
	s := newGitServer(t, false, "", "")
	for _, allow := range [][]string{nil, {"git.example.org"}, {"127.0.0.1:1"}} {
		o := httpOpts(s)
		o.Allow = allow
		g, err := FetchGit(context.Background(), s.url, "main", "", t.TempDir(), o)
		if err == nil {
			t.Fatalf("allow %v: fetched", allow)
		}
		want := "git host " + s.hostPort() + " is not in the agent's git allowlist (source.allow); add \"" + s.hostPort() + "\" to fetch from it"
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("allow %v: error %q\nwant it to say %q", allow, err, want)
		}
		t.Log(err)
		denied := false
		for _, e := range g.Events {
			denied = denied || e.Decision == egress.DecisionDeny
		}
		if !denied {
			t.Fatalf("allow %v: no denial among the events %+v", allow, g.Events)
		}
	}
	// An https remote that is not allowed is refused at the CONNECT,
	// before its name is even resolved.
	o := GitOptions{Allow: []string{s.hostPort()}, Timeout: time.Minute}
	_, err := FetchGit(context.Background(), "https://git.example.org/acme/widget.git", "main", "", t.TempDir(), o)
	want := `git host git.example.org is not in the agent's git allowlist (source.allow); add "git.example.org" to fetch from it`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("https: err = %v", err)
	}

	// A name rule never reaches loopback, whatever it resolves to.
	o = httpOpts(s)
	o.Allow = []string{strings.Replace(s.hostPort(), "127.0.0.1", "localhost", 1)}
	_, err = FetchGit(context.Background(), strings.Replace(s.url, "127.0.0.1", "localhost", 1), "main", "", t.TempDir(), o)
	if err == nil || !strings.Contains(err.Error(), "resolved to an address the agent's git allowlist (source.allow) does not cover") {
		t.Fatalf("localhost: err = %v", err)
	}
	t.Log(err)
}

func TestFetchGitHTTPS(t *testing.T) {
	s := newGitServer(t, true, "", "")
	pool := x509.NewCertPool()
	pool.AddCert(s.Certificate())
	o := GitOptions{Allow: []string{s.hostPort()}, UpstreamTLS: &tls.Config{RootCAs: pool}, Timeout: time.Minute}
	g, err := FetchGit(context.Background(), s.url, "main", s.second, t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	if g.Commit != s.second {
		t.Fatalf("commit %s", g.Commit)
	}
	// The proxy terminated TLS, so each request is on record with its
	// URL, not just an opaque tunnel.
	checkEvents(t, g.Events, s.hostPort())

	// Without the server's CA the proxy refuses the upstream.
	o.UpstreamTLS = nil
	if _, err := FetchGit(context.Background(), s.url, "main", "", t.TempDir(), o); err == nil {
		t.Fatal("fetched from a server the host's roots do not trust")
	}
}

func TestFetchGitAuthHeader(t *testing.T) {
	const token = "glpat-very-secret-token"
	s := newGitServer(t, false, "oauth2", token)
	o := httpOpts(s)

	_, err := FetchGit(context.Background(), s.url, "main", "", t.TempDir(), o)
	if err == nil {
		t.Fatal("fetched without credentials")
	}
	if !strings.Contains(err.Error(), "git fetch of "+s.url) {
		t.Fatalf("err = %v", err)
	}

	o.AuthHeader = "Authorization: Basic " + basic("oauth2", token)
	g, err := FetchGit(context.Background(), s.url, "main", "", t.TempDir(), o)
	if err != nil || g.Commit != s.second {
		t.Fatalf("%+v, %v", g, err)
	}

	// Credentials in the remote work, and are stripped from everything
	// the fetch leaves behind.
	withCreds := strings.Replace(s.url, "http://", "http://oauth2:"+token+"@", 1)
	dir := t.TempDir()
	g, err = FetchGit(context.Background(), withCreds, "main", "", dir, httpOpts(s))
	if err != nil {
		t.Fatal(err)
	}
	if g.Remote != s.url || gitOut(t, dir, "config", "--get", "remote.origin.url") != s.url {
		t.Fatalf("remote %q not redacted", g.Remote)
	}
	assertNoSecret(t, dir, token)
	for _, e := range g.Events {
		if strings.Contains(e.URL, token) {
			t.Fatalf("token in event %+v", e)
		}
	}

	// A wrong password in the remote: the error must not show it.
	wrong := strings.Replace(s.url, "http://", "http://oauth2:wrong-"+token+"@", 1)
	_, err = FetchGit(context.Background(), wrong, "main", "", t.TempDir(), httpOpts(s))
	if err == nil || strings.Contains(err.Error(), token) {
		t.Fatalf("err = %v", err)
	}
}

func basic(u, p string) string {
	r, _ := http.NewRequest(http.MethodGet, "http://example.org/", nil)
	r.SetBasicAuth(u, p)
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Basic ")
}

// assertNoSecret greps the whole checkout, .git included.
func assertNoSecret(t *testing.T, dir, secret string) {
	t.Helper()
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.Contains(string(b), secret) {
			t.Errorf("%s contains the secret", p)
		}
		return nil
	})
}

func TestFetchGitRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	o := GitOptions{Allow: []string{"git.example.org"}}
	const remote = "https://git.example.org/acme/widget.git"
	for name, c := range map[string]struct{ remote, ref, commit, want string }{
		"ssh":            {"ssh://git@git.example.org/acme/widget.git", "main", "", "only https"},
		"scp":            {"git@git.example.org:acme/widget.git", "main", "", "not a URL"},
		"file":           {"file:///srv/git/widget.git", "main", "", "only https"},
		"ext":            {"ext::sh -c touch% /tmp/pwned", "main", "", "whitespace"},
		"ext2":           {"ext::sh", "main", "", "not a URL"},
		"path":           {"/srv/git/widget.git", "main", "", "not a URL"},
		"helper":         {"https::https://git.example.org/acme", "main", "", "no host"},
		"http":           {"http://git.example.org/acme/widget.git", "main", "", "plain http"},
		"option remote":  {"--upload-pack=touch /tmp/pwned", "main", "", "starts with \"-\""},
		"option ref":     {remote, "--upload-pack=touch", "", "starts with \"-\""},
		"refspec":        {remote, "main:refs/heads/x", "", "contains ':'"},
		"forced refspec": {remote, "+main", "", "contains '+'"},
		"dotdot":         {remote, "main..dev", "", "\"..\""},
		"control":        {remote, "main\n", "", "contains '\\n'"},
		"reflog":         {remote, "main@{1}", "", "revision expression"},
		"commit":         {remote, "", "abc123", "40 (or 64) hex"},
		"nothing":        {remote, "", "", "needs a ref or a commit"},
	} {
		_, err := FetchGit(ctx, c.remote, c.ref, c.commit, t.TempDir(), o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want it to say %q", name, err, c.want)
		}
	}

	// A non-empty directory is refused before anything is fetched.
	dir := t.TempDir()
	write(t, filepath.Join(dir, "stale"), "x")
	if _, err := FetchGit(ctx, remote, "main", "", dir, o); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("non-empty dir: %v", err)
	}
	o.AuthHeader = "Authorization: x\r\nX-Injected: y"
	if _, err := FetchGit(ctx, remote, "main", "", t.TempDir(), o); err == nil || !strings.Contains(err.Error(), "auth header") {
		t.Errorf("header injection: %v", err)
	}
}

func TestFetchGitTimeout(t *testing.T) {
	requireGit(t)
	// A server that accepts and never answers.
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-hang }))
	defer srv.Close()
	defer close(hang)
	u, _ := url.Parse(srv.URL)
	o := GitOptions{Allow: []string{u.Host}, AllowHTTP: true, Timeout: 2 * time.Second}
	start := time.Now()
	_, err := FetchGit(context.Background(), srv.URL+"/acme/widget.git", "main", "", t.TempDir(), o)
	if err == nil || !strings.Contains(err.Error(), "timed out after 2s") {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("took %s", d)
	}
}
