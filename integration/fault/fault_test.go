// Package fault breaks the infrastructure under a running pipeline and
// checks that cleanroom says so (exit 2, a clear message), leaves nothing
// behind, and never presents a partial output as complete.
package fault

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cleanroom-ci/cleanroom/internal/clitest"
	"github.com/cleanroom-ci/cleanroom/internal/testenv"
)

// daemon is a containerd of the test's own, so that killing it does not
// disturb other tests running against the shared one.
type daemon struct {
	dir, sock string
	cmd       *exec.Cmd
}

func startDaemon(t *testing.T, dir string) *daemon {
	t.Helper()
	testenv.RequireRoot(t)
	bin := testenv.RequireBinary(t, "containerd")
	d := &daemon{dir: dir, sock: filepath.Join(dir, "containerd.sock")}
	// Traversable (not listable): runc mounts a step's rootfs under the
	// daemon's state from inside the step's user namespace.
	os.MkdirAll(dir, 0o711)
	cfg := filepath.Join(dir, "config.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), d.sock)), 0o600)
	logf, _ := os.OpenFile(filepath.Join(dir, "containerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	d.cmd = exec.Command(bin, "--config", cfg)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	clitest.WaitFor(t, 20*time.Second, func() bool {
		return exec.Command("ctr", "--address", d.sock, "version").Run() == nil
	})
	return d
}

func (d *daemon) kill() {
	d.cmd.Process.Kill()
	d.cmd.Wait()
}

// The daemon dies and comes back while a step runs: the run ends with
// exit 2 and a message that names containerd, and the next run leaves
// zero residue.
func TestContainerdRestartMidStep(t *testing.T) {
	dir := filepath.Join("/run", "cleanroom-fault-ctrd")
	os.RemoveAll(dir)
	d := startDaemon(t, dir)
	defer func() { d.kill(); os.RemoveAll(dir) }()
	cfg := clitest.Config{Namespace: testenv.Scope("cleanroom-fault"), StateDir: testenv.Scope("/run/cleanroom-fault"), Address: d.sock}
	e := clitest.New(t, cfg)
	e.Pipeline(`version: 1
image: IMAGE
steps:
  - name: long
    timeout: 5m
    run: echo started; sleep 600
`)
	cmd := e.Command(nil, "run")
	var out clitest.LockedBuffer
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	clitest.WaitFor(t, 60*time.Second, func() bool { return strings.Contains(out.String(), "[long] started") })
	d.kill()
	d = startDaemon(t, dir)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(90 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		t.Fatalf("the run did not end after containerd restarted:\n%s", out.String())
	}
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 2 {
		t.Fatalf("want exit 2, got %v:\n%s", err, out.String())
	}
	if !strings.Contains(strings.ToLower(out.String()), "sandbox failure") {
		t.Fatalf("no clear message:\n%s", out.String())
	}

	e.Pipeline("version: 1\nimage: IMAGE\nsteps:\n  - name: quick\n    run: \"true\"\n")
	if r := e.Run(nil, "run"); r.Code != 0 {
		t.Fatalf("run after restart: %s", r)
	}
	clitest.RequireNoResidue(t, cfg)
}

// A full output file system: a clear error, and every file that is there
// is complete (outputs are written to a temporary name and renamed).
func TestDiskFullInOutputDir(t *testing.T) {
	cfg := clitest.Config{Namespace: testenv.Scope("cleanroom-fault"), StateDir: testenv.Scope("/run/cleanroom-fault")}
	e := clitest.New(t, cfg)
	out := filepath.Join(t.TempDir(), "out")
	os.MkdirAll(out, 0o755)
	if err := unix.Mount("tmpfs", out, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(out, unix.MNT_DETACH)
	e.Pipeline(`version: 1
image: IMAGE
steps:
  - name: noisy
    timeout: 1m
    run: i=0; while [ $i -lt 3000 ]; do echo "line $i of a log that will not fit in the output directory"; i=$((i+1)); done
`)
	r := e.Run(nil, "run", "--out", out)
	if r.Code != 2 || !strings.Contains(strings.ToLower(r.Stderr), "no space left") {
		t.Fatalf("want exit 2 naming the full disk: %s", r)
	}
	filepath.Walk(out, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		if strings.Contains(filepath.Base(p), ".tmp") {
			t.Errorf("temporary file left: %s", p)
		}
		if strings.HasSuffix(p, ".json") {
			b, _ := os.ReadFile(p)
			if !json.Valid(b) {
				t.Errorf("%s is a partial file presented as complete", p)
			}
		}
		if strings.HasSuffix(p, "noisy.log") {
			b, _ := os.ReadFile(p)
			if !strings.HasSuffix(string(b), "line 2999 of a log that will not fit in the output directory\n") {
				t.Errorf("truncated log presented as complete (%d bytes)", len(b))
			}
		}
		return nil
	})
	clitest.RequireNoResidue(t, cfg)
}

// A run cancelled mid-step (SIGTERM) after a successful one: exit 2, no
// provenance, bundle or log of the earlier run left beside its own
// summary, and its fresh workspace unmounted and removed.
func TestCancelledRunLeavesOneRunsOutputs(t *testing.T) {
	cfg := clitest.Config{Namespace: testenv.Scope("cleanroom-fault"), StateDir: testenv.Scope("/run/cleanroom-fault")}
	e := clitest.New(t, cfg)
	out := filepath.Join(e.Dir, ".cleanroom")
	e.Pipeline("version: 1\nimage: IMAGE\nsteps:\n  - name: build\n    run: mkdir -p out && echo built > out/app\nartifacts: [\"out/app\"]\n")
	if r := e.Run(nil, "run"); r.Code != 0 {
		t.Fatalf("first run: %s", r)
	}
	if _, err := os.Stat(filepath.Join(out, "provenance.intoto.json")); err != nil {
		t.Fatalf("first run wrote no provenance: %v", err)
	}
	e.Pipeline("version: 1\nimage: IMAGE\nsteps:\n  - name: long\n    timeout: 5m\n    run: echo started; sleep 600\nartifacts: [\"out/app\"]\n")
	cmd := e.Command(nil, "run")
	var stderr clitest.LockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	clitest.WaitFor(t, 60*time.Second, func() bool { return strings.Contains(stderr.String(), "[long] started") })
	syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
		t.Fatalf("want exit 2 after SIGTERM, got %v:\n%s", err, stderr.String())
	}
	for _, f := range []string{"provenance.intoto.json", "logs/build.log"} {
		if _, err := os.Stat(filepath.Join(out, f)); err == nil {
			t.Errorf("the cancelled run left the earlier run's %s", f)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "summary.json")); err != nil {
		t.Errorf("the cancelled run wrote no summary: %v", err)
	}
	clitest.RequireNoResidue(t, cfg)
}
