package agent_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/agent/auth"
	"github.com/cleanroom-ci/cleanroom/agent/jobs"
	"github.com/cleanroom-ci/cleanroom/internal/agenttest"
)

// TestAgentCancelSuperseded pushes twice to main while the first push's
// job runs, on a hook with cancel_superseded: the first job is cancelled
// (its sandbox stopped) in favour of the newer commit, which builds; a
// job of another branch queued meanwhile is left alone. The list filters
// and pages; a job is re-run and cancelled from its page, and a
// cross-site POST is refused.
func TestAgentCancelSuperseded(t *testing.T) {
	e := newEnv(t)
	build := pipeline(`echo "build of $(cat mode.txt)"
if [ "$(cat mode.txt)" = slow ]; then sleep 120; fi`, "")
	g := newGitServer(t, map[string]string{"cleanroom.yaml": build, "mode.txt": "slow", "images/builder.tar": "@" + e.image})
	other := g.pushRef(t, "refs/heads/other", map[string]string{"mode.txt": "other"})
	newer := g.pushRef(t, "refs/heads/main", map[string]string{"mode.txt": "fast"})
	secret := "hook-" + strings.Repeat("s3cret", 4)
	secretFile := filepath.Join(e.dir, "hook.secret")
	os.WriteFile(secretFile, []byte(secret), 0o600)
	a := e.agent("supersede", "", fmt.Sprintf(`source:
  allow: [%q]
  allow_http: true
webhooks:
  - {name: app, provider: github, secret_file: %s, repository: %q, cancel_superseded: true}
`, g.Addr, secretFile, g.URL), 0, func(c *agenttest.AgentConfig) { c.Concurrency = 1 })
	viewer := e.client(a, e.read)
	push := func(ref, sha string) string {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"ref": ref, "after": sha, "repository": map[string]any{"clone_url": g.URL}})
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(body)
		r, err := agenttest.Client{URL: a.URL}.Do("POST", "/hooks/app", "application/json", bytes.NewReader(body),
			map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + hex.EncodeToString(mac.Sum(nil))})
		if err != nil || r.Status != 202 {
			t.Fatalf("push %s: %v %v", ref, r, err)
		}
		var sub struct{ ID string }
		json.Unmarshal(r.Body, &sub)
		return sub.ID
	}
	first := push("refs/heads/main", g.Commit)
	waitLog(t, viewer, first, "build of slow", time.Minute)
	otherID := push("refs/heads/other", other)
	second := push("refs/heads/main", newer)

	j := e.wait(viewer, first, time.Minute, agenttest.Finished)
	if j.State != jobs.StateCancelled || j.Error != "cancelled by job "+second+", a newer push" {
		t.Fatalf("superseded job: state %s error %q", j.State, j.Error)
	}
	if j := e.wait(viewer, second, 2*time.Minute, agenttest.Finished); j.State != jobs.StateSucceeded || j.Source.Commit != newer {
		t.Fatalf("newer push: %+v", j)
	}
	if j := e.wait(viewer, otherID, 2*time.Minute, agenttest.Finished); j.State != jobs.StateSucceeded {
		t.Fatalf("another branch's job: %+v", j)
	}

	// The job list filters by branch (a name or a full ref) and state,
	// and pages with a cursor.
	list := func(query string) ([]string, string) {
		t.Helper()
		r, err := viewer.Do("GET", "/api/v1/jobs?"+query, "", nil, nil)
		if err != nil || r.Status != 200 {
			t.Fatalf("list %s: %v %v", query, r, err)
		}
		var l struct {
			Jobs []jobs.Job
			Next string
		}
		json.Unmarshal(r.Body, &l)
		var got []string
		for _, j := range l.Jobs {
			got = append(got, j.ID)
		}
		return got, l.Next
	}
	if got, _ := list("ref=main"); strings.Join(got, ",") != second+","+first {
		t.Errorf("ref=main: %v", got)
	}
	if got, _ := list("ref=refs/heads/other"); strings.Join(got, ",") != otherID {
		t.Errorf("ref=refs/heads/other: %v", got)
	}
	if got, _ := list("state=cancelled&hook=app"); strings.Join(got, ",") != first {
		t.Errorf("state=cancelled: %v", got)
	}
	page1, next := list("limit=2")
	if len(page1) != 2 || next == "" {
		t.Fatalf("first page: %v next %q", page1, next)
	}
	page2, next2 := list(strings.TrimPrefix(next, "/api/v1/jobs?"))
	if len(page2) != 1 || next2 != "" || page2[0] != first {
		t.Fatalf("second page: %v next %q", page2, next2)
	}
	if r, _ := viewer.Do("GET", "/api/v1/jobs?state=done", "", nil, nil); r.Status != 400 {
		t.Errorf("bad state filter: %s", r)
	}
	// Re-run and cancel from the job page: same-origin POSTs with the
	// session cookie; a cross-site one is refused.
	post := func(path, token string, hdr map[string]string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", a.URL+path, nil)
		req.AddCookie(&http.Cookie{Name: auth.DefaultCookieName, Value: token})
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := webClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	sameOrigin := map[string]string{"Origin": a.URL, "Sec-Fetch-Site": "same-origin"}
	if resp := post("/jobs/"+first+"/rerun", e.read, sameOrigin); resp.StatusCode != 403 {
		t.Fatalf("re-run with a read token: %s", resp.Status)
	}
	resp := post("/jobs/"+first+"/rerun", e.submit, sameOrigin)
	if resp.StatusCode != 303 || !strings.HasPrefix(resp.Header.Get("Location"), "/jobs/j") {
		t.Fatalf("re-run from the page: %s %q", resp.Status, resp.Header.Get("Location"))
	}
	rerun := strings.TrimPrefix(resp.Header.Get("Location"), "/jobs/")
	waitLog(t, viewer, rerun, "build of slow", time.Minute)
	if resp := post("/jobs/"+rerun+"/cancel", e.admin, map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}); resp.StatusCode != 403 {
		t.Fatalf("cross-site cancel: %s", resp.Status)
	}
	if resp := post("/jobs/"+rerun+"/cancel", e.admin, sameOrigin); resp.StatusCode != 303 {
		t.Fatalf("cancel from the page: %s", resp.Status)
	}
	if j := e.wait(viewer, rerun, time.Minute, agenttest.Finished); j.State != jobs.StateCancelled || j.Trigger.RerunOf != first || j.Source.Commit != g.Commit || j.Trigger.Hook != "app" {
		t.Fatalf("re-run, then cancelled: %+v", j)
	}
	_, page := webGet(t, a.URL+"/jobs/"+second, e.submit)
	if !bytes.Contains(page, []byte(`id="rerun"`)) || bytes.Contains(page, []byte(`id="cancel"`)) {
		t.Errorf("a finished job's page for a submit token should offer re-run only:\n%s", page)
	}

	// The page shows the branch and filters the same way.
	_, page = webGet(t, a.URL+"/?ref=other", e.read)
	if !bytes.Contains(page, []byte(otherID)) || bytes.Contains(page, []byte(first)) || !bytes.Contains(page, []byte(`<td class="mono branch">other`)) {
		t.Errorf("web list filtered by branch:\n%s", page)
	}
}
