package agent_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/agent/jobs"
	"github.com/cleanroom-ci/cleanroom/internal/agenttest"
	"github.com/cleanroom-ci/cleanroom/internal/testenv"
)

const gitHTTPBackend = "/usr/lib/git-core/git-http-backend"

// gitServer serves a bare repository holding a pipeline and its image
// through `git http-backend` on loopback, as a forge would.
type gitServer struct {
	URL    string // clone URL
	Addr   string // 127.0.0.1:port
	Commit string
	git    func(dir string, args ...string) string
	work   string // the working copy commits are made in
	bare   string // the served repository
}

// pushRef commits files on top of the first commit and pushes the commit
// to ref in the served repository (as a forge keeps refs/pull/N/head for
// a pull request, forks included); it returns the commit.
func (g *gitServer) pushRef(t *testing.T, ref string, files map[string]string) string {
	t.Helper()
	g.git(g.work, "checkout", "-q", "-B", "topic", g.Commit)
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(g.work, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	g.git(g.work, "add", ".")
	g.git(g.work, "commit", "-q", "-m", "change from a fork")
	sha := g.git(g.work, "rev-parse", "HEAD")
	g.git(g.work, "push", "-q", g.bare, "HEAD:"+ref)
	return sha
}

func newGitServer(t *testing.T, files map[string]string) *gitServer {
	t.Helper()
	testenv.RequireBinary(t, "git")
	if _, err := os.Stat(gitHTTPBackend); err != nil {
		testenv.Missing(t, gitHTTPBackend+" (Debian's git)")
	}
	root := t.TempDir()
	work := filepath.Join(root, "work")
	os.MkdirAll(work, 0o755)
	for name, content := range files {
		p := filepath.Join(work, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if from, ok := strings.CutPrefix(content, "@"); ok {
			b, err := os.ReadFile(from)
			if err != nil {
				t.Fatal(err)
			}
			content = string(b)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git := func(dir string, args ...string) string {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.org", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.org", "GIT_CONFIG_GLOBAL=/dev/null")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git(work, "init", "-q", "-b", "main")
	git(work, "add", ".")
	git(work, "commit", "-q", "-m", "build me")
	sha := git(work, "rev-parse", "HEAD")
	git(root, "clone", "-q", "--bare", work, filepath.Join(root, "app.git"))
	h := &cgi.Handler{Path: gitHTTPBackend, Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return &gitServer{URL: "http://" + l.Addr().String() + "/app.git", Addr: l.Addr().String(), Commit: sha,
		git: git, work: work, bare: filepath.Join(root, "app.git")}
}

// TestAgentWebhook pushes to a repository on a loopback git server: a
// GitHub-signed delivery builds the commit, fetched by the agent through
// its git allowlist and recorded as the source material; a wrong
// signature builds nothing; a GitLab delivery with its token builds; a
// redelivery, or a replay of the same body under a new delivery id, is
// the same job.
func TestAgentWebhook(t *testing.T) {
	e := newEnv(t)
	g := newGitServer(t, map[string]string{
		"cleanroom.yaml":     pipeline("echo built-from-git\nmkdir -p out && echo ok > out/ok.txt", "artifacts: [out/ok.txt]\n"),
		"images/builder.tar": "@" + e.image,
	})
	secret := "gh-" + strings.Repeat("s3cret", 4)
	token := "gl-" + strings.Repeat("t0ken", 4)
	ghFile, glFile := filepath.Join(e.dir, "gh.secret"), filepath.Join(e.dir, "gl.secret")
	os.WriteFile(ghFile, []byte(secret+"\n"), 0o600)
	os.WriteFile(glFile, []byte(token), 0o600)
	extra := fmt.Sprintf(`source:
  allow: [%q]
  allow_http: true
webhooks:
  - name: app
    provider: github
    secret_file: %s
    repository: %s
    refs: [refs/heads/main]
  - name: lab
    provider: gitlab
    secret_file: %s
    repository: %s
`, g.Addr, ghFile, g.URL, glFile, g.URL)
	a := e.agent("hooks", "", extra, 0)
	viewer := e.client(a, e.read)

	ghPayload, _ := json.Marshal(map[string]any{
		"ref": "refs/heads/main", "after": g.Commit, "deleted": false,
		"repository": map[string]any{"clone_url": g.URL}, "pusher": map[string]any{"name": "alice"},
	})
	sign := func(body []byte, key string) string {
		m := hmac.New(sha256.New, []byte(key))
		m.Write(body)
		return "sha256=" + hex.EncodeToString(m.Sum(nil))
	}
	post := func(hook string, body []byte, hdr map[string]string) agenttest.Response {
		t.Helper()
		r, err := agenttest.Client{URL: a.URL}.Do("POST", "/hooks/"+hook, "application/json", bytes.NewReader(body), hdr)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	jobCount := func() int {
		r, _ := viewer.Do("GET", "/api/v1/jobs", "", nil, nil)
		var l struct{ Jobs []jobs.Job }
		json.Unmarshal(r.Body, &l)
		return len(l.Jobs)
	}

	// Invalid signature: 401 and nothing queued.
	r := post("app", ghPayload, map[string]string{"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-bad", "X-Hub-Signature-256": sign(ghPayload, "wrong-secret-wrong-secret")})
	if r.Status != 401 {
		t.Fatalf("bad signature: %s", r)
	}
	// A body changed after signing fails too.
	tampered := bytes.Replace(ghPayload, []byte("alice"), []byte("mallory"), 1)
	if r := post("app", tampered, map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": sign(ghPayload, secret)}); r.Status != 401 {
		t.Fatalf("tampered body: %s", r)
	}
	if n := jobCount(); n != 0 {
		t.Fatalf("refused deliveries queued %d jobs", n)
	}

	// Valid delivery.
	hdr := map[string]string{"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1", "X-Hub-Signature-256": sign(ghPayload, secret)}
	r = post("app", ghPayload, hdr)
	if r.Status != 202 {
		t.Fatalf("valid delivery: %s", r)
	}
	var sub struct{ ID string }
	json.Unmarshal(r.Body, &sub)
	// GitHub retries deliveries: the same delivery is the same job.
	if r2 := post("app", ghPayload, hdr); r2.Status != 202 || !strings.Contains(string(r2.Body), sub.ID) {
		t.Fatalf("redelivery: %s (first job %s)", r2, sub.ID)
	}
	// A captured delivery replayed under a new delivery id (the signature
	// covers the body only) is the same job too.
	replay := map[string]string{"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-replayed", "X-Hub-Signature-256": sign(ghPayload, secret)}
	if r3 := post("app", ghPayload, replay); r3.Status != 202 || !strings.Contains(string(r3.Body), sub.ID) {
		t.Fatalf("replay with a new delivery id: %s (first job %s)", r3, sub.ID)
	}
	j := e.wait(viewer, sub.ID, 2*time.Minute, agenttest.Finished)
	if j.State != jobs.StateSucceeded {
		t.Fatalf("webhook job: %+v\nlog:\n%s", j, logOf(t, viewer, sub.ID))
	}
	if j.Source.Commit != g.Commit || j.Trigger.Kind != "github" || j.Trigger.Hook != "app" || j.Trigger.Pusher != "alice" {
		t.Fatalf("job source/trigger: %+v %+v", j.Source, j.Trigger)
	}
	if !strings.Contains(logOf(t, viewer, sub.ID), "built-from-git") {
		t.Fatal("log lacks the step's output")
	}
	prov, err := viewer.File(sub.ID, "provenance.intoto.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(prov, []byte(g.Commit)) || !bytes.Contains(prov, []byte(strings.TrimPrefix(g.URL, "http://"))) || !bytes.Contains(prov, []byte("refs/heads/main")) {
		t.Fatalf("provenance does not record the source remote and commit:\n%s", prov)
	}

	// A push to a ref the hook does not build is acknowledged, not built.
	other, _ := json.Marshal(map[string]any{"ref": "refs/heads/feature", "after": g.Commit, "repository": map[string]any{"clone_url": g.URL}})
	if r := post("app", other, map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": sign(other, secret)}); r.Status != 202 || !strings.Contains(string(r.Body), "ignored") {
		t.Fatalf("unmatched ref: %s", r)
	}

	// GitLab: wrong token refused, right token builds.
	glPayload, _ := json.Marshal(map[string]any{
		"object_kind": "push", "ref": "refs/heads/main", "checkout_sha": g.Commit, "after": g.Commit,
		"project": map[string]any{"git_http_url": g.URL}, "user_username": "bob",
	})
	if r := post("lab", glPayload, map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": "nope"}); r.Status != 401 {
		t.Fatalf("gitlab wrong token: %s", r)
	}
	r = post("lab", glPayload, map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": token, "X-Gitlab-Event-UUID": "u-1"})
	if r.Status != 202 {
		t.Fatalf("gitlab delivery: %s", r)
	}
	json.Unmarshal(r.Body, &sub)
	if j := e.wait(viewer, sub.ID, 2*time.Minute, agenttest.Finished); j.State != jobs.StateSucceeded || j.Trigger.Kind != "gitlab" {
		t.Fatalf("gitlab job: %+v", j)
	}
	if r := post("nope", glPayload, nil); r.Status != 404 {
		t.Fatalf("unknown hook: %s", r)
	}

	// Forges send everyone's deliveries from a shared pool of addresses:
	// a stream of bad deliveries from this address is held back (429),
	// but authentic deliveries from it, to that hook or another, and
	// valid API tokens keep working.
	bad := map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": sign(ghPayload, "wrong-secret-wrong-secret")}
	var last agenttest.Response
	for range 12 {
		last = post("app", ghPayload, bad)
	}
	if last.Status != 429 {
		t.Fatalf("12th bad delivery: %s, want 429", last)
	}
	for i := range 12 {
		viewer := agenttest.Client{URL: a.URL, Token: fmt.Sprintf("crt_wrong%d", i)}
		last, _ = viewer.Do("GET", "/api/v1/jobs", "", nil, nil)
	}
	if last.Status != 429 {
		t.Fatalf("12th bad token: %s, want 429", last)
	}
	hdr["X-GitHub-Delivery"] = "d-after-the-flood"
	if r := post("app", ghPayload, hdr); r.Status != 202 {
		t.Fatalf("authentic delivery from a limited address: %s", r)
	}
	if r := post("lab", glPayload, map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": token, "X-Gitlab-Event-UUID": "u-1"}); r.Status != 202 {
		t.Fatalf("another hook's delivery from a limited address: %s", r)
	}
	if r, _ := viewer.Do("GET", "/api/v1/jobs", "", nil, nil); r.Status != 200 {
		t.Fatalf("valid token from a limited address: %s", r)
	}
}
