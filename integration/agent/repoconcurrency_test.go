package agent_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/agent/jobs"
	"github.com/cleanroom-ci/cleanroom/internal/agenttest"
)

// TestAgentRepositoryConcurrency submits three jobs of one repository and
// one of another to an agent with three slots and
// jobs.repository_concurrency: 1: the first repository's jobs never run
// two at once (a loopback witness counts them in flight), and the other
// repository's job is not held up behind them.
func TestAgentRepositoryConcurrency(t *testing.T) {
	e := newEnv(t)
	w := newWitness(t, 3*time.Second)
	src := func(id string) map[string]string {
		return map[string]string{
			"cleanroom.yaml":     pipeline(`wget -q -O- "http://`+w.addr+`/hold?id=`+id+`"`, fmt.Sprintf("egress:\n  allow: [%q]\n", w.addr)),
			"images/builder.tar": "@" + e.image,
		}
	}
	g1, g2 := newGitServer(t, src("r1")), newGitServer(t, src("r2"))
	a := e.agent("repos", "", fmt.Sprintf("egress: {maximum: [%q]}\nsource: {allow: [%q, %q], allow_http: true}\njobs: {repository_concurrency: 1}\n", w.addr, g1.Addr, g2.Addr), 0,
		func(c *agenttest.AgentConfig) { c.Concurrency = 3 })
	ci := e.client(a, e.submit)
	submit := func(g *gitServer) string {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"git": map[string]string{"repository": g.URL, "ref": "refs/heads/main"}})
		r, err := ci.Do("POST", "/api/v1/jobs", "application/json", strings.NewReader(string(body)), nil)
		if err != nil || r.Status != 202 {
			t.Fatalf("submit: %v %v", r, err)
		}
		var sub struct{ ID string }
		json.Unmarshal(r.Body, &sub)
		return sub.ID
	}
	var r1 []string
	for range 3 {
		r1 = append(r1, submit(g1))
	}
	r2 := submit(g2)
	var last jobs.Job
	for _, id := range r1 {
		if j := e.wait(ci, id, 3*time.Minute, agenttest.Finished); j.State != jobs.StateSucceeded {
			t.Fatalf("job %s: %+v", id, j)
		} else if j.Started.After(last.Started) {
			last = j
		}
	}
	other := e.wait(ci, r2, 3*time.Minute, agenttest.Finished)
	if other.State != jobs.StateSucceeded {
		t.Fatalf("other repository's job: %+v", other)
	}
	_, maxActive, done := w.snapshot()
	if maxActive["r1"] != 1 || done["r1"] != 3 {
		t.Fatalf("repository r1: %d in flight at most (want 1), %d done", maxActive["r1"], done["r1"])
	}
	if !other.Started.Before(last.Started) {
		t.Fatalf("the other repository's job waited behind r1's (started %v, r1's last %v)", other.Started, last.Started)
	}
}
