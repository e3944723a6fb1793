// Package agent_test drives real `cleanroom agent` processes: the API,
// webhooks, live logs, cancel, restarts and two agents sharing one
// JetStream through a real nats-server. Every job runs in real sandboxes.
package agent_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/agent/jobs"
	"github.com/cleanroom-ci/cleanroom/internal/agenttest"
	"github.com/cleanroom-ci/cleanroom/internal/clitest"
	"github.com/cleanroom-ci/cleanroom/internal/testenv"
	"github.com/cleanroom-ci/cleanroom/internal/testimage"
)

// cfg keeps this package's containers and namespaces apart from the
// other integration packages running at the same time.
var cfg = clitest.Config{Namespace: testenv.Scope("cleanroom-agent"), StateDir: testenv.Scope("/run/cleanroom-agent-test")}

type env struct {
	t      *testing.T
	cfg    clitest.Config // namespace and state dir of the agents' jobs
	bin    string
	image  string
	tokens string
	// Tokens of each scope, and a second submit token.
	submit, read, admin, other string
	dir                        string
	seq                        atomic.Int32
}

func newEnv(t *testing.T) *env { return newEnvFor(t, cfg) }

// newEnvFor is newEnv for agents whose jobs use c's namespace and state
// dir.
func newEnvFor(t *testing.T, c clitest.Config) *env {
	t.Helper()
	testenv.RequireRoot(t)
	if _, err := os.Stat(clitest.Address); err != nil {
		testenv.Missing(t, "containerd at "+clitest.Address)
	}
	testenv.RequireBinary(t, "runc")
	e := &env{t: t, cfg: c, bin: clitest.Binary(t), image: testimage.Busybox(t), dir: t.TempDir()}
	e.tokens = filepath.Join(e.dir, "tokens.json")
	for name, p := range map[string]*string{"ci": &e.submit, "viewer": &e.read, "ops": &e.admin, "other": &e.other} {
		scope := map[string]string{"ci": "submit", "viewer": "read", "ops": "admin", "other": "submit"}[name]
		s, err := agenttest.CreateToken(e.bin, e.tokens, name, scope)
		if err != nil {
			t.Fatal(err)
		}
		*p = s
	}
	t.Cleanup(func() {
		if !t.Failed() {
			clitest.RequireNoResidue(t, c)
		}
	})
	return e
}

// agent starts an agent; extra is YAML appended to its config.
func (e *env) agent(name, natsURL, extra string, port int, opts ...func(*agenttest.AgentConfig)) *agenttest.Agent {
	e.t.Helper()
	c := agenttest.AgentConfig{
		Binary: e.bin, Dir: filepath.Join(e.dir, name), StateDir: e.cfg.StateDir, Namespace: e.cfg.Namespace,
		TokensFile: e.tokens, NATSURL: natsURL, ID: name, Extra: extra, Port: port,
	}
	for _, o := range opts {
		o(&c)
	}
	a, err := agenttest.StartAgent(c)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		if err := a.Stop(time.Minute); err != nil {
			e.t.Errorf("agent %s: %v\n%s", name, err, a.Log)
		}
		if e.t.Failed() {
			e.t.Logf("agent %s log:\n%s", name, a.Log)
		}
	})
	return a
}

func (e *env) client(a *agenttest.Agent, token string) agenttest.Client {
	return agenttest.Client{URL: a.URL, Token: token}
}

// source is a tarball of a pipeline whose steps run script, with the
// busybox test image inside it; files adds more files.
func (e *env) source(pipeline string, files map[string]string) []byte {
	e.t.Helper()
	m := map[string]string{"cleanroom.yaml": pipeline, "images/builder.tar": "@" + e.image}
	for k, v := range files {
		m[k] = v
	}
	tgz, err := agenttest.Tarball(m)
	if err != nil {
		e.t.Fatal(err)
	}
	return tgz
}

// pipeline is a one-step pipeline running script.
func pipeline(script string, extra string) string {
	var b strings.Builder
	b.WriteString("version: 1\nimage: oci-archive:./images/builder.tar\n")
	b.WriteString(extra)
	b.WriteString("steps:\n  - name: build\n    run: |\n")
	for _, l := range strings.Split(strings.TrimSpace(script), "\n") {
		b.WriteString("      " + l + "\n")
	}
	return b.String()
}

func (e *env) submit1(c agenttest.Client, tgz []byte) string {
	e.t.Helper()
	id, err := c.SubmitTarball(tgz, "")
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

func (e *env) wait(c agenttest.Client, id string, d time.Duration, cond func(jobs.Job) bool) jobs.Job {
	e.t.Helper()
	j, err := c.Wait(id, d, cond)
	if err != nil {
		e.t.Fatal(err)
	}
	return j
}

// logOf reads a job's whole log (plain text; returns at the job's end).
func logOf(t *testing.T, c agenttest.Client, id string) string {
	t.Helper()
	r, err := c.Do("GET", "/api/v1/jobs/"+id+"/log", "", nil, nil)
	if err != nil || r.Status != 200 {
		t.Fatalf("log: %v %v", r, err)
	}
	return string(r.Body)
}

// childRuns lists the `cleanroom run` processes whose state dir is ours.
func childRuns() []string {
	out, _ := exec.Command("pgrep", "-af", "--", "--state-dir "+cfg.StateDir+" .* run -f").Output()
	var l []string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if !strings.Contains(sc.Text(), "pgrep") {
			l = append(l, sc.Text())
		}
	}
	return l
}

func waitNoChildRuns(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if len(childRuns()) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("cleanroom run children still alive after %v:\n%s", d, strings.Join(childRuns(), "\n"))
}

func ids(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("job-%02d", i))
	}
	return out
}
