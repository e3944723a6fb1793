// Package integration tests cleanroom end to end through the built CLI,
// against a real containerd and runc, as root. `make test` provides both;
// under CI=true a missing prerequisite fails instead of skipping. The
// driving code is internal/clitest, shared with the attack and fault
// suites; this file adapts it to this package's tests.
package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/internal/clitest"
	"github.com/cleanroom-ci/cleanroom/internal/testenv"
)

const address = clitest.Address

var (
	namespace = testenv.Scope("cleanroom-it")
	stateDir  = testenv.Scope("/run/cleanroom-it")
)

var (
	cfg    = clitest.Config{Namespace: namespace, StateDir: stateDir}
	binary string
)

func TestMain(m *testing.M) {
	var err error
	if binary, err = clitest.BuildBinary(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// env is one test's workspace with the busybox image next to the pipeline.
type env struct {
	*clitest.Env
	t     *testing.T
	dir   string
	image string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ce := clitest.New(t, cfg)
	return &env{Env: ce, t: t, dir: ce.Dir, image: ce.Image}
}

// pipeline writes cleanroom.yaml; "IMAGE" is replaced by the test image.
func (e *env) pipeline(yaml string) string { return e.Pipeline(yaml) }

type result struct {
	code   int
	stdout string
	stderr string
}

func (r result) String() string {
	return clitest.Result{Code: r.code, Stdout: r.stdout, Stderr: r.stderr}.String()
}

func baseArgs() []string {
	return []string{"--namespace", namespace, "--state-dir", stateDir, "--containerd-address", address}
}

// run runs the CLI to completion.
func (e *env) run(extraEnv []string, args ...string) result {
	e.t.Helper()
	r := e.Run(extraEnv, args...)
	return result{code: r.Code, stdout: r.Stdout, stderr: r.Stderr}
}

func (e *env) command(extraEnv []string, args ...string) *exec.Cmd {
	return e.Command(extraEnv, args...)
}

func (e *env) events() []clitest.Event { return e.Events() }

type egressEvent = clitest.Event

type summary struct {
	Failed string `json:"failedStep"`
	Steps  []struct {
		Name     string `json:"name"`
		Status   string `json:"status"`
		ExitCode int    `json:"exitCode"`
	} `json:"steps"`
	Images []struct {
		Ref    string `json:"ref"`
		Digest string `json:"digest"`
	} `json:"images"`
}

func parseSummary(t *testing.T, r result) summary {
	t.Helper()
	var s summary
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("--output json is not JSON: %v\n%s", err, r)
	}
	return s
}

func (s summary) status(step string) string {
	for _, st := range s.Steps {
		if st.Name == step {
			return st.Status
		}
	}
	return "absent"
}

func residue(t *testing.T) []string { return clitest.Residue(t, cfg) }

func requireNoResidue(t *testing.T) { clitest.RequireNoResidue(t, cfg) }

type lockedBuffer = clitest.LockedBuffer

func waitFor(t *testing.T, d time.Duration, cond func() bool) { clitest.WaitFor(t, d, cond) }
