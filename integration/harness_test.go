// Package integration tests cleanroom end to end through the built CLI,
// against a real containerd and runc, as root. `make test` provides both;
// under CI=true a missing prerequisite fails instead of skipping.
package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/internal/testenv"
	"github.com/cleanroom-ci/cleanroom/internal/testimage"
)

const (
	namespace = "cleanroom-it"
	stateDir  = "/run/cleanroom-it"
	address   = "/run/containerd/containerd.sock"
)

var binary string

func TestMain(m *testing.M) {
	binary = os.Getenv("CLEANROOM_BIN")
	if binary == "" {
		dir, err := os.MkdirTemp("", "cleanroom-bin-")
		if err != nil {
			panic(err)
		}
		binary = filepath.Join(dir, "cleanroom")
		out, err := exec.Command("go", "build", "-o", binary, "../cmd/cleanroom").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build cleanroom: %v\n%s", err, out)
			os.Exit(2)
		}
		defer os.RemoveAll(dir)
	}
	code := m.Run()
	os.Exit(code)
}

// env is one test's workspace with the busybox image next to the pipeline.
type env struct {
	t     *testing.T
	dir   string
	image string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	testenv.RequireRoot(t)
	if _, err := os.Stat(address); err != nil {
		testenv.Missing(t, "containerd at "+address)
	}
	testenv.RequireBinary(t, "runc")
	return &env{t: t, dir: t.TempDir(), image: testimage.Busybox(t)}
}

// pipeline writes cleanroom.yaml; "IMAGE" in the text is replaced by the
// test image archive.
func (e *env) pipeline(yaml string) string {
	e.t.Helper()
	yaml = strings.ReplaceAll(yaml, "IMAGE", "oci-archive:"+e.image)
	p := filepath.Join(e.dir, "cleanroom.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

type result struct {
	code   int
	stdout string
	stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout\n%s\n--- stderr\n%s", r.code, r.stdout, r.stderr)
}

func baseArgs() []string {
	return []string{"--namespace", namespace, "--state-dir", stateDir, "--containerd-address", address}
}

// run runs the CLI to completion.
func (e *env) run(extraEnv []string, args ...string) result {
	e.t.Helper()
	cmd := e.command(extraEnv, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("run cleanroom: %v", err)
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

func (e *env) command(extraEnv []string, args ...string) *exec.Cmd {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	e.t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, binary, append(baseArgs(), args...)...)
	cmd.Dir = e.dir
	cmd.Env = append(os.Environ(), extraEnv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

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

// residue lists what runs left behind: containers, snapshots and leases in
// the test namespace, namespace files, and mounts under the state dir.
func residue(t *testing.T) []string {
	t.Helper()
	var left []string
	for _, what := range [][]string{{"containers", "ls", "-q"}, {"tasks", "ls", "-q"}, {"leases", "ls", "-q"}} {
		out, err := exec.Command("ctr", append([]string{"--address", address, "-n", namespace}, what...)...).Output()
		if err != nil {
			t.Fatalf("ctr %v: %v", what, err)
		}
		for _, l := range strings.Fields(string(out)) {
			left = append(left, what[0]+": "+l)
		}
	}
	out, _ := exec.Command("ctr", "--address", address, "-n", namespace, "snapshots", "ls").Output()
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "Active") {
			left = append(left, "snapshot: "+l)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(stateDir, "netns"))
	for _, e := range ents {
		left = append(left, "netns: "+e.Name())
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && strings.HasPrefix(f[4], stateDir+"/netns/") {
			left = append(left, "mount: "+f[4])
		}
	}
	return left
}

func requireNoResidue(t *testing.T) {
	t.Helper()
	if left := residue(t); len(left) > 0 {
		t.Fatalf("residue after run:\n%s", strings.Join(left, "\n"))
	}
}

// lockedBuffer is a bytes.Buffer safe for a process writing while the test
// reads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("condition not met within %v", d)
}
