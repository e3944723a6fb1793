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

// TestAgentOutageKeepsFinishedBuilds stops the NATS server shared by two
// agents while four jobs run, for longer than ack_wait, and lets the
// builds finish during the outage: each finished build's result is kept
// by its agent and recorded once NATS is back, so every job ran once (one
// attempt, its step's output once in its log, no agent called lost). A
// submission during the outage is spooled and answered at once, not
// refused after a time-out, and so is a webhook delivery; both run once
// NATS is back.
func TestAgentOutageKeepsFinishedBuilds(t *testing.T) {
	e := newEnv(t)
	bin, err := agenttest.BuildNATSServer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store := t.TempDir()
	n, err := agenttest.StartNATS(bin, store, 0)
	if err != nil {
		t.Fatal(err)
	}
	ackWait := func(c *agenttest.AgentConfig) { c.AckWait = 10 * time.Second }
	g := newGitServer(t, map[string]string{"cleanroom.yaml": pipeline("echo hook-ran", ""), "images/builder.tar": "@" + e.image})
	secret := "hook-" + strings.Repeat("s3cret", 4)
	secretFile := filepath.Join(e.dir, "hook.secret")
	os.WriteFile(secretFile, []byte(secret), 0o600)
	hooks := fmt.Sprintf("source: {allow: [%q], allow_http: true}\nwebhooks:\n  - {name: app, provider: github, secret_file: %s, repository: %q}\n", g.Addr, secretFile, g.URL)
	a1 := e.agent("out1", n.URL, hooks, 0, ackWait)
	a2 := e.agent("out2", n.URL, hooks, 0, ackWait)
	c1, c2 := e.client(a1, e.submit), e.client(a2, e.submit)
	var ids []string
	for i := range 4 {
		c := []agenttest.Client{c1, c2}[i%2]
		ids = append(ids, e.submit1(c, e.source(pipeline("echo run-begin\nsleep 4\necho run-end", ""), nil)))
	}
	for _, id := range ids {
		waitLog(t, c1, id, "run-begin", 2*time.Minute)
	}
	n.Stop()
	cut := time.Now()

	// During the outage: a submission is spooled, quickly.
	start := time.Now()
	r, err := c2.Do("POST", "/api/v1/jobs", "application/gzip", strings.NewReader(string(e.source(pipeline("echo spooled-ran", ""), nil))), nil)
	if err != nil {
		t.Fatal(err)
	}
	var sub struct {
		ID      string
		Spooled bool
	}
	json.Unmarshal(r.Body, &sub)
	if r.Status != 202 || !sub.Spooled || time.Since(start) > 7*time.Second {
		t.Fatalf("submission during the outage: %s after %v", r, time.Since(start))
	}
	// A webhook delivery during the outage is spooled too, within the
	// forge's delivery time-out.
	body, _ := json.Marshal(map[string]any{"ref": "refs/heads/main", "after": g.Commit, "repository": map[string]any{"clone_url": g.URL}})
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	start = time.Now()
	r, err = agenttest.Client{URL: a1.URL}.Do("POST", "/hooks/app", "application/json", bytes.NewReader(body),
		map[string]string{"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-outage", "X-Hub-Signature-256": "sha256=" + hex.EncodeToString(mac.Sum(nil))})
	if err != nil {
		t.Fatal(err)
	}
	var hookSub struct {
		ID      string
		Spooled bool
	}
	json.Unmarshal(r.Body, &hookSub)
	if r.Status != 202 || !hookSub.Spooled || time.Since(start) > 7*time.Second {
		t.Fatalf("webhook during the outage: %s after %v", r, time.Since(start))
	}
	// Let the outage outlast ack_wait twice over.
	waitNoChildRuns(t, time.Minute)
	time.Sleep(time.Until(cut.Add(22 * time.Second)))
	if n, err = agenttest.StartNATS(bin, store, n.Port); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)

	for _, id := range ids {
		j := e.wait(c1, id, 2*time.Minute, agenttest.Finished)
		if j.State != jobs.StateSucceeded || j.Attempt != 1 || len(j.History) != 1 {
			t.Errorf("job %s after the outage: state %s attempt %d history %+v", id, j.State, j.Attempt, j.History)
			continue
		}
		if !j.Finished.After(cut) {
			t.Errorf("job %s ended before the outage (%v, cut at %v): nothing was tested", id, j.Finished, cut)
		}
		log := logOf(t, c1, id)
		if strings.Count(log, "run-begin") != 1 || strings.Count(log, "run-end") != 1 {
			t.Errorf("job %s ran more than once or not to the end:\n%s", id, log)
		}
		if _, err := c1.File(id, "provenance.intoto.json"); err != nil {
			t.Errorf("job %s: provenance not stored: %v", id, err)
		}
	}
	j := e.wait(c2, sub.ID, 2*time.Minute, agenttest.Finished)
	if j.State != jobs.StateSucceeded || !strings.Contains(logOf(t, c2, sub.ID), "spooled-ran") {
		t.Fatalf("spooled job: %+v", j)
	}
	j = e.wait(c1, hookSub.ID, 2*time.Minute, agenttest.Finished)
	if j.State != jobs.StateSucceeded || j.Trigger.Delivery != "d-outage" || !strings.Contains(logOf(t, c1, hookSub.ID), "hook-ran") {
		t.Fatalf("spooled webhook job: %+v", j)
	}
	for _, a := range []*agenttest.Agent{a1, a2} {
		deadline := time.Now().Add(30 * time.Second)
		for {
			m := metricsOf(t, e.client(a, e.read))
			var missing []string
			for _, want := range []string{"cleanroom_agent_jobs_lost_total 0", "cleanroom_agent_jobs_retried_total 0", "cleanroom_agent_results_pending 0", "cleanroom_agent_submissions_spooled 0", "cleanroom_agent_nats_connected 1"} {
				if !strings.Contains(m, want+"\n") {
					missing = append(missing, want)
				}
			}
			if len(missing) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("agent %s metrics lack %q", a.Cfg.ID, missing)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

func metricsOf(t *testing.T, c agenttest.Client) string {
	t.Helper()
	r, err := c.Do("GET", "/metrics", "", nil, nil)
	if err != nil || r.Status != 200 {
		t.Fatalf("metrics: %v %v", r, err)
	}
	return string(r.Body)
}
