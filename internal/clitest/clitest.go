// Package clitest drives the built cleanroom binary in end-to-end tests:
// a workspace per test, the busybox test image, runs with exit codes and
// output, and a check that nothing a run created is left behind. Tests
// need root and containerd; under CI=true a missing prerequisite fails.
package clitest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/internal/testenv"
	"github.com/cleanroom-ci/cleanroom/internal/testimage"
)

// Address is the containerd socket the tests use (started by `make test`).
const Address = "/run/containerd/containerd.sock"

// Config names the containerd namespace and state directory a test
// package uses, so packages running in parallel do not see each other's
// residue.
type Config struct {
	Namespace string
	StateDir  string
	// Address is the containerd socket; default Address.
	Address string
}

func (c Config) address() string {
	if c.Address != "" {
		return c.Address
	}
	return Address
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Binary returns the cleanroom binary: $CLEANROOM_BIN, or one built once
// per test process from this source tree.
func Binary(t testing.TB) string {
	t.Helper()
	p, err := BuildBinary()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// BuildBinary is Binary for callers without a testing.TB (TestMain).
func BuildBinary() (string, error) {
	if p := os.Getenv("CLEANROOM_BIN"); p != "" {
		return p, nil
	}
	binOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		dir, err := os.MkdirTemp("", "cleanroom-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "cleanroom")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/cleanroom")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("build cleanroom: %v\n%s", err, out)
		}
	})
	return binPath, binErr
}

// Env is one test's workspace with the busybox image.
type Env struct {
	T     *testing.T
	Dir   string
	Image string
	// Timeout bounds each CLI run (0: 5 minutes).
	Timeout time.Duration
	cfg     Config
	bin     string
}

// New checks the prerequisites and makes a workspace.
func New(t *testing.T, cfg Config) *Env {
	t.Helper()
	testenv.RequireRoot(t)
	if _, err := os.Stat(cfg.address()); err != nil {
		testenv.Missing(t, "containerd at "+cfg.address())
	}
	testenv.RequireBinary(t, "runc")
	return &Env{T: t, Dir: t.TempDir(), Image: testimage.Busybox(t), cfg: cfg, bin: Binary(t)}
}

// Pipeline writes cleanroom.yaml; "IMAGE" is replaced by the test image.
func (e *Env) Pipeline(yaml string) string {
	e.T.Helper()
	yaml = strings.ReplaceAll(yaml, "IMAGE", "oci-archive:"+e.Image)
	p := filepath.Join(e.Dir, "cleanroom.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		e.T.Fatal(err)
	}
	return p
}

// Result is a finished CLI run.
type Result struct {
	Code   int
	Stdout string
	Stderr string
}

func (r Result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout\n%s\n--- stderr\n%s", r.Code, r.Stdout, r.Stderr)
}

// BaseArgs are the global flags every run gets. With
// CLEANROOM_TEST_RUNTIME set (runc, crun, runsc), every step runs under
// that runtime (--force-runtime): `make test` runs the attack suite once
// per runtime this way.
func (e *Env) BaseArgs() []string {
	args := []string{"--namespace", e.cfg.Namespace, "--state-dir", e.cfg.StateDir, "--containerd-address", e.cfg.address()}
	if rt := os.Getenv("CLEANROOM_TEST_RUNTIME"); rt != "" {
		args = append(args, "--force-runtime", rt)
	}
	return args
}

// Run runs the CLI to completion.
func (e *Env) Run(extraEnv []string, args ...string) Result {
	e.T.Helper()
	cmd := e.Command(extraEnv, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.T.Fatalf("run cleanroom: %v", err)
	}
	return Result{Code: code, Stdout: out.String(), Stderr: errb.String()}
}

// Command prepares a CLI run in its own process group.
func (e *Env) Command(extraEnv []string, args ...string) *exec.Cmd {
	timeout := e.Timeout
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	e.T.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, e.bin, append(e.BaseArgs(), args...)...)
	cmd.Dir = e.Dir
	cmd.Env = append(os.Environ(), extraEnv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// Event is the subset of an egress event the tests look at.
type Event struct {
	Step     string `json:"step"`
	Method   string `json:"method"`
	Host     string `json:"host"`
	Port     int    `json:"port"`
	URL      string `json:"url"`
	Status   int    `json:"status"`
	SHA256   string `json:"sha256"`
	Size     int64  `json:"size"`
	Decision string `json:"decision"`
	Reason   string `json:"reason"`
	Module   string `json:"module"`
	Version  string `json:"version"`
}

// Events reads the last run's egress.jsonl.
func (e *Env) Events() []Event {
	e.T.Helper()
	f, err := os.Open(filepath.Join(e.Dir, ".cleanroom", "egress.jsonl"))
	if err != nil {
		e.T.Fatal(err)
	}
	defer f.Close()
	var out []Event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			e.T.Fatalf("egress.jsonl line %q: %v", sc.Text(), err)
		}
		out = append(out, ev)
	}
	return out
}

// Residue lists what runs left behind in cfg's namespace and state dir:
// containers, tasks, leases, active snapshots, namespace files and mounts.
func Residue(t testing.TB, cfg Config) []string {
	t.Helper()
	var left []string
	for _, what := range [][]string{{"containers", "ls", "-q"}, {"tasks", "ls", "-q"}, {"leases", "ls", "-q"}} {
		out, err := exec.Command("ctr", append([]string{"--address", cfg.address(), "-n", cfg.Namespace}, what...)...).Output()
		if err != nil {
			t.Fatalf("ctr %v: %v", what, err)
		}
		for _, l := range strings.Fields(string(out)) {
			left = append(left, what[0]+": "+l)
		}
	}
	out, _ := exec.Command("ctr", "--address", cfg.address(), "-n", cfg.Namespace, "snapshots", "ls").Output()
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "Active") {
			left = append(left, "snapshot: "+l)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(cfg.StateDir, "netns"))
	for _, e := range ents {
		left = append(left, "netns: "+e.Name())
	}
	ents, _ = os.ReadDir(filepath.Join(cfg.StateDir, "workspaces"))
	for _, e := range ents {
		left = append(left, "workspace: "+e.Name())
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && (strings.HasPrefix(f[4], cfg.StateDir+"/netns/") || strings.HasPrefix(f[4], cfg.StateDir+"/workspaces/")) {
			left = append(left, "mount: "+f[4])
		}
	}
	return left
}

// RequireNoResidue fails the test if anything is left behind.
func RequireNoResidue(t testing.TB, cfg Config) {
	t.Helper()
	if left := Residue(t, cfg); len(left) > 0 {
		t.Fatalf("residue after run:\n%s", strings.Join(left, "\n"))
	}
}

// LockedBuffer is a bytes.Buffer safe for a process writing while the test
// reads.
type LockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// WaitFor polls cond until it holds or d passes.
func WaitFor(t testing.TB, d time.Duration, cond func() bool) {
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
