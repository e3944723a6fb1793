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
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/agent/jobs"
	"github.com/cleanroom-ci/cleanroom/internal/agenttest"
)

// fakeForge is a loopback server speaking the commit-status APIs of
// GitHub (POST /repos/{owner}/{repo}/statuses/{sha}), Gitea and Forgejo
// (the same under /api/v1, "Authorization: token …") and GitLab (POST
// /api/v4/projects/{id}/statuses/{sha}, PRIVATE-TOKEN), strictly: a wrong
// token is 401, an unknown field or state 422, as the real ones answer.
type fakeForge struct {
	URL   string
	token string
	mu    sync.Mutex
	posts []forgePost
}

type forgePost struct {
	API, Repo, SHA string
	Body           map[string]string
}

var (
	githubStatusPath = regexp.MustCompile(`^/repos/([^/]+/[^/]+)/statuses/([0-9a-f]{40})$`)
	giteaStatusPath  = regexp.MustCompile(`^/api/v1/repos/([^/]+/[^/]+)/statuses/([0-9a-f]{40})$`)
	gitlabStatusPath = regexp.MustCompile(`^/api/v4/projects/([^/]+)/statuses/([0-9a-f]{40})$`)
)

func newFakeForge(t *testing.T, token string) *fakeForge {
	f := &fakeForge{token: token}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.URL = "http://" + l.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(f.serve)}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return f
}

func (f *fakeForge) serve(w http.ResponseWriter, r *http.Request) {
	var api, auth, want string
	var m []string
	allowed := map[string]bool{"state": true, "target_url": true, "description": true}
	states := map[string]bool{}
	switch path := r.URL.EscapedPath(); {
	case giteaStatusPath.MatchString(path):
		api, m, auth, want = "gitea", giteaStatusPath.FindStringSubmatch(path), r.Header.Get("Authorization"), "token "+f.token
		allowed["context"] = true
		states = map[string]bool{"pending": true, "success": true, "error": true, "failure": true, "warning": true}
	case githubStatusPath.MatchString(path):
		api, m, auth, want = "github", githubStatusPath.FindStringSubmatch(path), r.Header.Get("Authorization"), "Bearer "+f.token
		allowed["context"] = true
		states = map[string]bool{"pending": true, "success": true, "error": true, "failure": true}
	case gitlabStatusPath.MatchString(path):
		api, m, auth, want = "gitlab", gitlabStatusPath.FindStringSubmatch(path), r.Header.Get("PRIVATE-TOKEN"), f.token
		allowed["name"] = true
		states = map[string]bool{"pending": true, "running": true, "success": true, "failed": true, "canceled": true}
	default:
		http.Error(w, `{"message":"Not Found"}`, http.StatusNotFound)
		return
	}
	if r.Method != http.MethodPost {
		http.Error(w, `{"message":"Method Not Allowed"}`, http.StatusMethodNotAllowed)
		return
	}
	if auth != want {
		http.Error(w, `{"message":"Bad credentials"}`, http.StatusUnauthorized)
		return
	}
	var body map[string]string
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || !states[body["state"]] {
		http.Error(w, `{"message":"Validation Failed"}`, http.StatusUnprocessableEntity)
		return
	}
	for k := range body {
		if !allowed[k] {
			http.Error(w, `{"message":"unknown field `+k+`"}`, http.StatusUnprocessableEntity)
			return
		}
	}
	repo := m[1]
	if api == "gitlab" {
		repo = strings.ReplaceAll(repo, "%2F", "/")
	}
	f.mu.Lock()
	f.posts = append(f.posts, forgePost{API: api, Repo: repo, SHA: m[2], Body: body})
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(map[string]any{"id": len(f.posts), "state": body["state"]})
}

func (f *fakeForge) postsFor(api string) []forgePost {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []forgePost
	for _, p := range f.posts {
		if p.API == api {
			out = append(out, p)
		}
	}
	return out
}

// TestAgentCommitStatus builds pushes from three webhooks whose jobs
// report back to a loopback forge in GitHub's, GitLab's and Gitea's
// dialects: a pending (GitLab: running) status when a job starts, then
// success or failure, each linking to the job's page, with the token from
// a file that no job sees.
func TestAgentCommitStatus(t *testing.T) {
	e := newEnv(t)
	g := newGitServer(t, map[string]string{
		"cleanroom.yaml":     pipeline("echo status-ok", ""),
		"fail.yaml":          pipeline("echo status-failing; exit 3", ""),
		"images/builder.tar": "@" + e.image,
	})
	token := "forge-" + strings.Repeat("t0k3n", 5)
	forge := newFakeForge(t, token)
	tokenFile := filepath.Join(e.dir, "forge.token")
	os.WriteFile(tokenFile, []byte(token+"\n"), 0o600)
	secret := "hook-" + strings.Repeat("s3cret", 4)
	secretFile := filepath.Join(e.dir, "hook.secret")
	os.WriteFile(secretFile, []byte(secret), 0o600)
	extra := fmt.Sprintf(`url: https://ci.example.test/
source:
  allow: [%[1]q]
  allow_http: true
webhooks:
  - name: gh
    provider: github
    secret_file: %[2]s
    repository: %[3]s
    status: {api: %[4]q, repository: acme/app, token_file: %[5]s}
  - name: gl
    provider: gitlab
    secret_file: %[2]s
    repository: %[3]s
    pipeline: fail.yaml
    status: {api: %[6]q, repository: acme/app, token_file: %[5]s}
  - name: gt
    provider: github
    secret_file: %[2]s
    repository: %[3]s
    status: {kind: gitea, api: %[7]q, repository: acme/app, token_file: %[5]s, context: ci/cleanroom}
`, g.Addr, secretFile, g.URL, forge.URL, tokenFile, forge.URL+"/api/v4", forge.URL+"/api/v1")
	a := e.agent("status", "", extra, 0)
	viewer := e.client(a, e.read)

	deliver := func(hook string, body []byte, hdr map[string]string) string {
		t.Helper()
		r, err := agenttest.Client{URL: a.URL}.Do("POST", "/hooks/"+hook, "application/json", bytes.NewReader(body), hdr)
		if err != nil || r.Status != 202 {
			t.Fatalf("delivery to %s: %v %v", hook, r, err)
		}
		var sub struct{ ID string }
		json.Unmarshal(r.Body, &sub)
		return sub.ID
	}
	gh, _ := json.Marshal(map[string]any{"ref": "refs/heads/main", "after": g.Commit, "repository": map[string]any{"clone_url": g.URL}})
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(gh)
	ghHdr := map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + hex.EncodeToString(mac.Sum(nil))}
	ghID := deliver("gh", gh, ghHdr)
	gtID := deliver("gt", gh, ghHdr)
	gl, _ := json.Marshal(map[string]any{"object_kind": "push", "ref": "refs/heads/main", "checkout_sha": g.Commit, "after": g.Commit, "project": map[string]any{"git_http_url": g.URL}})
	glID := deliver("gl", gl, map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": secret})

	for _, tc := range []struct {
		api, id, context, final string
		states                  []string
		state                   string
	}{
		{"github", ghID, "cleanroom", "success", []string{"pending", "success"}, jobs.StateSucceeded},
		{"gitea", gtID, "ci/cleanroom", "success", []string{"pending", "success"}, jobs.StateSucceeded},
		{"gitlab", glID, "cleanroom", "failed", []string{"running", "failed"}, jobs.StateFailed},
	} {
		j := e.wait(viewer, tc.id, 2*time.Minute, agenttest.Finished)
		if j.State != tc.state {
			t.Fatalf("%s job: %+v", tc.api, j)
		}
		// The final status is posted right after the state is recorded.
		var posts []forgePost
		deadline := time.Now().Add(20 * time.Second)
		for {
			posts = forge.postsFor(tc.api)
			if len(posts) >= len(tc.states) || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if len(posts) != len(tc.states) {
			t.Fatalf("%s: statuses %+v, want %v", tc.api, posts, tc.states)
		}
		for i, p := range posts {
			name := p.Body["context"]
			if tc.api == "gitlab" {
				name = p.Body["name"]
			}
			if p.Body["state"] != tc.states[i] || p.SHA != g.Commit || p.Repo != "acme/app" || name != tc.context ||
				p.Body["target_url"] != "https://ci.example.test/jobs/"+tc.id {
				t.Errorf("%s status %d: %+v", tc.api, i, p)
			}
		}
		if log := logOf(t, viewer, tc.id); strings.Contains(log, token) {
			t.Errorf("%s: the forge token reached the job's log", tc.api)
		}
	}
	if m := metricsOf(t, viewer); !strings.Contains(m, `cleanroom_agent_commit_statuses_total{hook="gh",outcome="posted"} 2`) {
		t.Errorf("metrics lack the posted statuses:\n%s", m)
	}
}
