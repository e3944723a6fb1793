package agent_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/agent/jobs"
	"github.com/cleanroom-ci/cleanroom/internal/agenttest"
)

// TestAgentForkPullRequest builds pull requests delivered by a GitHub
// webhook on an agent that signs: a push to main and a pull request from
// the repository itself are trusted and signed; a pull request from a
// fork runs unsigned (the key's password never reaches its run), under
// the untrusted builder id, which its provenance records, and within the
// untrusted egress cap (none by default), which refuses a rule the
// fork's pipeline adds. Its commit status reaches the forge on the pull
// request's head commit.
func TestAgentForkPullRequest(t *testing.T) {
	e := newEnv(t)
	signing := webSigning(t, e.bin, e.dir)
	build := `echo built-$(cat who.txt)
mkdir -p out && cat who.txt > out/who.txt
echo "secret:${DEPLOY_TOKEN:-none} $(printf %s "${DEPLOY_TOKEN:-}" | sha256sum | cut -c1-16)"
echo "dir-secret:$(printf %s "${API_KEY:-}" | sha256sum | cut -c1-16)"`
	g := newGitServer(t, map[string]string{
		"cleanroom.yaml":     pipeline(build, "artifacts: [out/who.txt]\n"),
		"who.txt":            "main",
		"images/builder.tar": "@" + e.image,
	})
	forkSHA := g.pushRef(t, "refs/pull/7/head", map[string]string{"who.txt": "fork"})
	egressSHA := g.pushRef(t, "refs/pull/8/head", map[string]string{"cleanroom.yaml": pipeline(build, "egress:\n  allow: [exfil.example.net]\nartifacts: [out/who.txt]\n")})
	sameSHA := g.pushRef(t, "refs/pull/9/head", map[string]string{"who.txt": "same-repo"})

	token := "forge-" + strings.Repeat("t0k3n", 5)
	forge := newFakeForge(t, token)
	tokenFile := filepath.Join(e.dir, "forge.token")
	os.WriteFile(tokenFile, []byte(token), 0o600)
	secret := "hook-" + strings.Repeat("s3cret", 4)
	secretFile := filepath.Join(e.dir, "hook.secret")
	os.WriteFile(secretFile, []byte(secret), 0o600)
	// Secrets for the repository's main branch: one file, and a directory
	// of them; both are read when a job starts.
	deployFile := filepath.Join(e.dir, "deploy.token")
	os.WriteFile(deployFile, []byte("deploy-value-one\n"), 0o600)
	secretDir := filepath.Join(e.dir, "secrets")
	os.MkdirAll(secretDir, 0o700)
	os.WriteFile(filepath.Join(secretDir, "API_KEY"), []byte("api-key-value"), 0o600)
	short := func(v string) string { s := sha256.Sum256([]byte(v)); return hex.EncodeToString(s[:])[:16] }
	a := e.agent("prs", "", fmt.Sprintf(`url: https://ci.example.test
secrets:
  - {name: DEPLOY_TOKEN, file: %s, repositories: [%q], refs: [refs/heads/main]}
  - {dir: %s, repositories: ["http://127.0.0.1:*/app.git"]}
source:
  allow: [%q]
  allow_http: true
webhooks:
  - name: app
    provider: github
    secret_file: %s
    repository: %s
    refs: [refs/heads/main]
    pull_requests: true
    status: {api: %q, repository: acme/app, token_file: %s}
%s`, deployFile, g.URL, secretDir, g.Addr, secretFile, g.URL, forge.URL, tokenFile, signing), 0)
	viewer := e.client(a, e.read)

	deliver := func(event string, payload map[string]any) jobs.Job {
		t.Helper()
		body, _ := json.Marshal(payload)
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(body)
		r, err := agenttest.Client{URL: a.URL}.Do("POST", "/hooks/app", "application/json", bytes.NewReader(body),
			map[string]string{"X-GitHub-Event": event, "X-Hub-Signature-256": "sha256=" + hex.EncodeToString(mac.Sum(nil))})
		if err != nil || r.Status != 202 {
			t.Fatalf("%s delivery: %v %v", event, r, err)
		}
		var sub struct{ ID string }
		json.Unmarshal(r.Body, &sub)
		return e.wait(viewer, sub.ID, 2*time.Minute, agenttest.Finished)
	}
	pr := func(n int, sha, headRepo string) map[string]any {
		return map[string]any{"action": "opened", "number": n, "sender": map[string]any{"login": "contributor"},
			"pull_request": map[string]any{
				"head": map[string]any{"sha": sha, "repo": map[string]any{"full_name": headRepo}},
				"base": map[string]any{"ref": "main", "repo": map[string]any{"full_name": "acme/app", "clone_url": g.URL}},
			}}
	}
	builderOf := func(j jobs.Job) string {
		t.Helper()
		prov, err := viewer.File(j.ID, "provenance.intoto.json")
		if err != nil {
			t.Fatal(err)
		}
		var st struct {
			Predicate struct {
				RunDetails struct{ Builder struct{ ID string } }
			}
		}
		json.Unmarshal(prov, &st)
		return st.Predicate.RunDetails.Builder.ID
	}

	trusted := deliver("push", map[string]any{"ref": "refs/heads/main", "after": g.Commit, "repository": map[string]any{"clone_url": g.URL}})
	if trusted.State != jobs.StateSucceeded || trusted.Untrusted || trusted.Result.SignedBy == "" || len(trusted.Result.Bundles) == 0 || builderOf(trusted) != "https://cleanroom.dev/builder/agent@v1" {
		t.Fatalf("push to main: %+v %+v", trusted, trusted.Result)
	}

	// The trusted build got both secrets, masked in its log and absent
	// from its provenance.
	log := logOf(t, viewer, trusted.ID)
	if !strings.Contains(log, "secret:[masked] "+short("deploy-value-one")) || !strings.Contains(log, "dir-secret:"+short("api-key-value")) || strings.Contains(log, "deploy-value-one") {
		t.Fatalf("trusted build's secrets:\n%s", log)
	}
	if prov, _ := viewer.File(trusted.ID, "provenance.intoto.json"); bytes.Contains(prov, []byte("deploy-value-one")) || bytes.Contains(prov, []byte("api-key-value")) {
		t.Fatal("a secret's value is in the provenance")
	}
	// A rotated secret file is read by the next job, without a restart.
	os.WriteFile(deployFile, []byte("deploy-value-two"), 0o600)
	again := deliver("push", map[string]any{"ref": "refs/heads/main", "after": g.Commit, "repository": map[string]any{"clone_url": g.URL}, "pusher": map[string]any{"name": "again"}})
	if log := logOf(t, viewer, again.ID); !strings.Contains(log, "secret:[masked] "+short("deploy-value-two")) {
		t.Fatalf("rotated secret not used:\n%s", log)
	}

	fork := deliver("pull_request", pr(7, forkSHA, "contributor/app"))
	if fork.State != jobs.StateSucceeded || !fork.Untrusted || fork.Trigger.PullRequest != 7 || fork.Source.Commit != forkSHA || fork.Source.Ref != "refs/pull/7/head" {
		t.Fatalf("fork pull request: %+v\n%s", fork, logOf(t, viewer, fork.ID))
	}
	if fork.Result.SignedBy != "" || len(fork.Result.Bundles) != 0 {
		t.Fatalf("a fork's build was signed: %+v", fork.Result)
	}
	if b := builderOf(fork); b != "https://cleanroom.dev/builder/agent-untrusted@v1" {
		t.Fatalf("fork build's provenance builder id %q", b)
	}
	if log := logOf(t, viewer, fork.ID); !strings.Contains(log, "built-fork") || !strings.Contains(log, "secret:none "+short("")) || !strings.Contains(log, "dir-secret:"+short("")) {
		t.Fatalf("the fork's build (its commit, no secrets):\n%s", log)
	}

	exfil := deliver("pull_request", pr(8, egressSHA, "contributor/app"))
	if exfil.State != jobs.StateError || exfil.Cause != jobs.CauseUser || !strings.Contains(exfil.Error, "untrusted build") || !strings.Contains(exfil.Error, `"exfil.example.net" is not within egress.maximum`) {
		t.Fatalf("fork pull request adding egress: %+v", exfil)
	}

	same := deliver("pull_request", pr(9, sameSHA, "acme/app"))
	if same.State != jobs.StateSucceeded || same.Untrusted || same.Result.SignedBy == "" {
		t.Fatalf("pull request from the repository itself: %+v %+v", same, same.Result)
	}

	// The fork's commit status is on its head commit.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var states []string
		for _, p := range forge.postsFor("github") {
			if p.SHA == forkSHA {
				states = append(states, p.Body["state"])
			}
		}
		if strings.Join(states, ",") == "pending,success" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("statuses on the fork's commit: %v", states)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
