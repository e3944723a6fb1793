package agent_test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/agent/jobs"
	"github.com/cleanroom-ci/cleanroom/internal/agenttest"
)

// TestAgentRestartMidJob kills the agent while a job runs (SIGKILL, as a
// crash or an OOM kill would) and starts it again on the same data
// directory: the job's sandbox died with the agent, and the job is run
// again (jobs.on_agent_loss: retry) exactly once more, or failed with the
// reason (fail). It is never lost, and never runs twice at once.
func TestAgentRestartMidJob(t *testing.T) {
	e := newEnv(t)
	port, err := agenttest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	a := e.agent("restart", "", "", port)
	ci := e.client(a, e.submit)
	id := e.submit1(ci, e.source(pipeline("echo attempt-begin\nsleep 5\necho attempt-end", ""), nil))
	waitLog(t, ci, id, "attempt-begin", time.Minute)
	a.Kill()
	// The child run got SIGTERM with its parent and removed its sandbox.
	waitNoChildRuns(t, 30*time.Second)

	a = e.agent("restart", "", "", port)
	j := e.wait(ci, id, 2*time.Minute, agenttest.Finished)
	if j.State != jobs.StateSucceeded || j.Attempt != 2 || len(j.History) != 2 {
		t.Fatalf("job after restart: state %s attempt %d history %+v", j.State, j.Attempt, j.History)
	}
	if !strings.HasPrefix(j.History[0].Outcome, "lost: agent restart was lost") || j.History[1].Outcome != jobs.StateSucceeded {
		t.Fatalf("history %+v", j.History)
	}
	log := logOf(t, ci, id)
	if strings.Count(log, "attempt-begin") != 2 || strings.Count(log, "attempt-end") != 1 {
		t.Fatalf("log of a job interrupted once:\n%s", log)
	}

	// With on_agent_loss: fail the job ends with the reason instead.
	a.Stop(time.Minute)
	a = e.agent("restart", "", "jobs: {on_agent_loss: fail}\n", port)
	id = e.submit1(ci, e.source(pipeline("echo attempt-begin\nsleep 30", ""), nil))
	waitLog(t, ci, id, "attempt-begin", time.Minute)
	a.Kill()
	waitNoChildRuns(t, 30*time.Second)
	a = e.agent("restart", "", "jobs: {on_agent_loss: fail}\n", port)
	j = e.wait(ci, id, 2*time.Minute, agenttest.Finished)
	if j.State != jobs.StateError || j.Attempt != 1 || !strings.Contains(j.Error, "was lost while running attempt 1") || !strings.Contains(j.Error, "on_agent_loss: fail") {
		t.Fatalf("job with on_agent_loss fail: state %s attempt %d error %q", j.State, j.Attempt, j.Error)
	}
	// The killed run's workspace was removed when the agent came back,
	// though the job never ran here again.
	if left, _ := os.ReadDir(filepath.Join(a.Cfg.Dir, "data", "jobs")); len(left) != 0 {
		t.Fatalf("workspaces left after the restart: %v", left)
	}
}

// witness is a loopback HTTP server the jobs' steps call through their
// egress proxy: it holds each request for a while and records how many
// requests per job are in flight at once.
type witness struct {
	addr string
	mu   sync.Mutex
	// active and maxActive count in-flight holds per job; done counts
	// holds that ran to the end.
	active, maxActive, done map[string]int
}

func newWitness(t *testing.T, hold time.Duration) *witness {
	w := &witness{active: map[string]int{}, maxActive: map[string]int{}, done: map[string]int{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w.addr = l.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		w.mu.Lock()
		w.active[id]++
		w.maxActive[id] = max(w.maxActive[id], w.active[id])
		w.mu.Unlock()
		defer func() {
			w.mu.Lock()
			w.active[id]--
			w.mu.Unlock()
		}()
		select {
		case <-time.After(hold):
			w.mu.Lock()
			w.done[id]++
			w.mu.Unlock()
			fmt.Fprintln(rw, "held", id)
		case <-r.Context().Done():
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return w
}

func (w *witness) snapshot() (active, maxActive, done map[string]int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	cp := func(m map[string]int) map[string]int {
		o := map[string]int{}
		for k, v := range m {
			o[k] = v
		}
		return o
	}
	return cp(w.active), cp(w.maxActive), cp(w.done)
}

// TestAgentFailoverTwoAgents runs two agents on one external JetStream
// (a real nats-server) sharing 10 jobs, and kills one while it runs jobs:
// every job completes exactly once, the killed agent's jobs are taken
// over by the other, and no job ever runs in two places at once.
func TestAgentFailoverTwoAgents(t *testing.T) {
	e := newEnv(t)
	bin, err := agenttest.BuildNATSServer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	n, err := agenttest.StartNATS(bin, t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	w := newWitness(t, 4*time.Second)
	// The witness is on loopback: only an admin's maximum lets a
	// pipeline's IP rule reach it.
	maximum := fmt.Sprintf("egress: {maximum: [%q]}\n", w.addr)
	a1 := e.agent("a1", n.URL, maximum, 0)
	a2 := e.agent("a2", n.URL, maximum, 0)
	c1, c2 := e.client(a1, e.submit), e.client(a2, e.submit)

	p := pipeline(`id=$(cat id.txt)
echo "job $id holding"
wget -q -O- "http://`+w.addr+`/hold?id=$id"
echo "job $id done"`, fmt.Sprintf("egress:\n  allow: [%q]\n", w.addr))
	byName := map[string]string{}
	for _, name := range ids(10) {
		c := c1
		if len(byName)%2 == 1 {
			c = c2 // either agent takes submissions for the shared queue
		}
		byName[name] = e.submit1(c, e.source(p, map[string]string{"id.txt": name}))
	}
	// Kill a1 as soon as one of its jobs is inside its hold.
	deadline := time.Now().Add(2 * time.Minute)
	var killedJobs []string
	for len(killedJobs) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("a1 never ran a job\n%s", a1.Log)
		}
		active, _, _ := w.snapshot()
		for name, id := range byName {
			if active[name] == 0 {
				continue
			}
			if j, err := c2.Job(id); err == nil && j.State == jobs.StateRunning && j.Agent == "a1" {
				killedJobs = append(killedJobs, name)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	a1.Kill()
	t.Logf("killed a1 while it ran %v", killedJobs)

	lost := 0
	for name, id := range byName {
		j := e.wait(c2, id, 3*time.Minute, agenttest.Finished)
		if j.State != jobs.StateSucceeded {
			t.Errorf("%s (%s): %s %q", name, id, j.State, j.Error)
			continue
		}
		succeeded := 0
		for _, h := range j.History {
			if h.Outcome == jobs.StateSucceeded {
				succeeded++
			}
			if strings.HasPrefix(h.Outcome, "lost: agent a1") {
				lost++
			}
		}
		if succeeded != 1 {
			t.Errorf("%s: %d successful attempts, want exactly 1: %+v", name, succeeded, j.History)
		}
		if last := j.History[len(j.History)-1]; len(j.History) > 1 && last.Agent != "a2" {
			t.Errorf("%s: retried on %s, want the surviving agent a2", name, last.Agent)
		}
	}
	if lost < len(killedJobs) {
		t.Errorf("%d attempts recorded as lost with a1, want at least %d", lost, len(killedJobs))
	}
	_, maxActive, done := w.snapshot()
	for _, name := range ids(10) {
		if maxActive[name] != 1 {
			t.Errorf("%s ran %d times at once", name, maxActive[name])
		}
		if done[name] < 1 {
			t.Errorf("%s never completed its work", name)
		}
	}
	for _, name := range killedJobs {
		j, _ := c2.Job(byName[name])
		if len(j.History) < 2 || j.History[0].Agent != "a1" {
			t.Errorf("%s was running on a1 when it was killed; history %+v", name, j.History)
		}
	}
	waitNoChildRuns(t, 30*time.Second)
}

func waitLog(t *testing.T, c agenttest.Client, id, want string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(logTail(c, id), want) {
		if time.Now().After(deadline) {
			t.Fatalf("job %s: %q not in its log after %v", id, want, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestAgentDrainHandsBack stops an agent (SIGTERM) while a job runs longer
// than jobs.grace: the agent stops taking jobs (/readyz answers 503), waits
// the grace, stops the job's sandbox, hands the job back to the queue
// without counting the attempt, and exits 0; the next agent runs it.
func TestAgentDrainHandsBack(t *testing.T) {
	e := newEnv(t)
	port, err := agenttest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	a := e.agent("drain", "", "jobs: {grace: 2s}\n", port)
	ci := e.client(a, e.submit)
	id := e.submit1(ci, e.source(pipeline("echo run-begin\nsleep 8\necho run-end", ""), nil))
	waitLog(t, ci, id, "run-begin", time.Minute)
	start := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- a.Stop(time.Minute) }()
	sawDraining := false
	for !sawDraining && time.Since(start) < 2*time.Second {
		if resp, err := http.Get(a.URL + "/readyz"); err == nil {
			resp.Body.Close()
			sawDraining = resp.StatusCode == http.StatusServiceUnavailable
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !sawDraining {
		t.Error("/readyz never answered 503 while the agent drained")
	}
	if err := <-stopped; err != nil {
		t.Fatalf("drained agent: %v", err)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("drain took %v with a 2s grace", took)
	}
	waitNoChildRuns(t, 10*time.Second)

	a = e.agent("drain", "", "", port)
	j := e.wait(ci, id, 2*time.Minute, agenttest.Finished)
	if j.State != jobs.StateSucceeded || j.Attempt != 1 || len(j.History) != 2 || !strings.HasPrefix(j.History[0].Outcome, "handed back") {
		t.Fatalf("handed-back job: state %s attempt %d history %+v", j.State, j.Attempt, j.History)
	}
	if log := logOf(t, ci, id); strings.Count(log, "run-begin") != 2 || strings.Count(log, "run-end") != 1 {
		t.Fatalf("log:\n%s", log)
	}
}

// TestAgentPartitionedStopsItsRun cuts the agent off from NATS (the server
// stops) while a job runs: once a whole ack_wait passes without a
// heartbeat reaching NATS, the agent stops the run itself, because
// another agent may take the job over after the same lease expiry. When
// NATS is back, the attempt is handed back uncounted (the queue was
// unreachable; the agent was not lost), and the job runs again and
// succeeds.
func TestAgentPartitionedStopsItsRun(t *testing.T) {
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
	a := e.agent("cut", n.URL, "", 0)
	ci := e.client(a, e.submit)
	id := e.submit1(ci, e.source(pipeline("echo part-begin\nsleep 20\necho part-end", ""), nil))
	waitLog(t, ci, id, "part-begin", time.Minute)
	n.Stop()
	cut := time.Now()
	waitNoChildRuns(t, 30*time.Second)
	took := time.Since(cut)
	if took > 12*time.Second {
		t.Errorf("the partitioned agent stopped its run after %v (ack_wait 3s)", took)
	}
	if !strings.Contains(a.Log.String(), "lease expired without a heartbeat reaching NATS") {
		t.Errorf("agent log does not say why it stopped the run:\n%s", a.Log)
	}
	if n, err = agenttest.StartNATS(bin, store, n.Port); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	// The stopped attempt was handed back uncounted: the queue was
	// unreachable, the agent was not lost.
	j := e.wait(ci, id, 2*time.Minute, agenttest.Finished)
	if j.State != jobs.StateSucceeded || j.Attempt != 1 || len(j.History) != 2 || !strings.Contains(j.History[0].Outcome, "handed back: NATS was unreachable") {
		t.Fatalf("job after the partition: state %s attempt %d history %+v", j.State, j.Attempt, j.History)
	}
	t.Logf("run stopped %v after NATS went away", took.Round(100*time.Millisecond))
}
