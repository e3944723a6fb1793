package agent_test

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/agent/jobs"
	"github.com/cleanroom-ci/cleanroom/internal/agenttest"
)

// TestAgentEgressMaximum attacks the agent's own host from a pipeline: IP
// rules to the agent's /healthz on loopback and to the cloud metadata
// address are refused at submission by default, naming the rule, and the
// same pipeline fetched from git fails before any step runs; a missing
// pipeline file is refused at submission too. With egress.maximum set,
// rules within it run and reach their host, and anything else (a name
// outside it, audit mode) is refused.
func TestAgentEgressMaximum(t *testing.T) {
	e := newEnv(t)
	w := newWitness(t, 0)
	port, err := agenttest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	self := fmt.Sprintf("127.0.0.1:%d", port)
	probe := pipeline("wget -q -O- http://"+self+"/healthz && echo REACHED-AGENT", fmt.Sprintf("egress:\n  allow: [%q]\n", self))
	g := newGitServer(t, map[string]string{"cleanroom.yaml": probe, "images/builder.tar": "@" + e.image})
	a := e.agent("egress", "", fmt.Sprintf("source:\n  allow: [%q]\n  allow_http: true\n", g.Addr), port)
	ci := e.client(a, e.submit)

	refused := func(c agenttest.Client, tgz []byte, status int, want ...string) {
		t.Helper()
		r, err := c.Do("POST", "/api/v1/jobs", "application/gzip", strings.NewReader(string(tgz)), nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != status {
			t.Fatalf("submission answered %s, want %d", r, status)
		}
		for _, s := range want {
			if !strings.Contains(string(r.Body), s) {
				t.Fatalf("refusal %s does not say %q", r.Body, s)
			}
		}
	}
	refused(ci, e.source(probe, nil), 403, `egress.allow[0]: \"`+self+`\" reaches loopback addresses`, "cleanroom.yaml:4")
	metadata := pipeline("wget -q -O- http://169.254.169.254/latest/meta-data/", "")
	metadata = strings.Replace(metadata, "    run: |", "    egress: {allow: [\"169.254.169.254:80\"]}\n    run: |", 1)
	refused(ci, e.source(metadata, nil), 403, `steps[0].egress.allow[0]: \"169.254.169.254:80\" reaches link-local addresses`)
	noPipeline, err := agenttest.Tarball(map[string]string{"README": "no pipeline here"})
	if err != nil {
		t.Fatal(err)
	}
	refused(ci, noPipeline, 400, "the source has no file cleanroom.yaml")

	// From git the pipeline is only known when the job runs: it fails
	// there, as the submitter's error, and no step starts.
	body, _ := json.Marshal(map[string]any{"git": map[string]string{"repository": g.URL, "ref": "refs/heads/main"}})
	r, err := ci.Do("POST", "/api/v1/jobs", "application/json", strings.NewReader(string(body)), nil)
	if err != nil || r.Status != 202 {
		t.Fatalf("git submission: %v %v", r, err)
	}
	var sub struct{ ID string }
	json.Unmarshal(r.Body, &sub)
	j := e.wait(ci, sub.ID, 2*time.Minute, agenttest.Finished)
	if j.State != jobs.StateError || j.Cause != jobs.CauseUser || !strings.Contains(j.Error, "reaches loopback addresses") || j.Result != nil {
		t.Fatalf("git job with a loopback rule: %+v", j)
	}
	if log := logOf(t, ci, sub.ID); strings.Contains(log, "REACHED-AGENT") {
		t.Fatalf("the step reached the agent:\n%s", log)
	}
	a.Stop(time.Minute)

	// An admin's maximum: what it covers runs, the rest is refused.
	_, wport, _ := net.SplitHostPort(w.addr)
	a = e.agent("egress", "", fmt.Sprintf("egress:\n  maximum: [\"*.example.test\", \"127.0.0.1:%s\"]\n", wport), port)
	ci = e.client(a, e.submit)
	refused(ci, e.source(pipeline("true", "egress:\n  allow: [deps.other.test]\n"), nil), 403, `\"deps.other.test\" is not within egress.maximum`, "*.example.test")
	refused(ci, e.source(pipeline("true", "egress:\n  mode: audit\n"), nil), 403, "audit mode allows any host")
	id := e.submit1(ci, e.source(pipeline(`wget -q -O- "http://`+w.addr+`/hold?id=allowed"`, fmt.Sprintf("egress:\n  allow: [%q, deps.example.test]\n", w.addr)), nil))
	if j := e.wait(ci, id, 2*time.Minute, agenttest.Finished); j.State != jobs.StateSucceeded {
		t.Fatalf("job within egress.maximum: %+v\n%s", j, logOf(t, ci, id))
	}
	if _, _, done := w.snapshot(); done["allowed"] != 1 {
		t.Fatalf("the allowed request did not reach its host: %v", done)
	}
}
