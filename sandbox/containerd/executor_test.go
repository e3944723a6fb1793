package ctrexec_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/cleanroom-ci/cleanroom/internal/runlock"
	"github.com/cleanroom-ci/cleanroom/internal/testenv"
	"github.com/cleanroom-ci/cleanroom/internal/testimage"
	"github.com/cleanroom-ci/cleanroom/sandbox"
	ctrexec "github.com/cleanroom-ci/cleanroom/sandbox/containerd"
)

// newExecutor connects to the daemon that `make test` started.
func newExecutor(t *testing.T) (*ctrexec.Executor, sandbox.Image) {
	t.Helper()
	return newExecutorWith(t)
}

func newExecutorWith(t *testing.T, extra ...ctrexec.Option) (*ctrexec.Executor, sandbox.Image) {
	t.Helper()
	testenv.RequireRoot(t)
	if _, err := os.Stat(ctrexec.DefaultAddress); err != nil {
		testenv.Missing(t, "containerd at "+ctrexec.DefaultAddress)
	}
	archive := testimage.Busybox(t)
	ctx := context.Background()
	locks := t.TempDir()
	lock, err := runlock.Acquire(locks)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Release() })
	state := t.TempDir()
	// The namespace directory is a mount point (see sandbox/netns).
	t.Cleanup(func() { unix.Unmount(filepath.Join(state, "netns"), unix.MNT_DETACH) })
	opts := append([]ctrexec.Option{ctrexec.WithAddress(ctrexec.DefaultAddress),
		ctrexec.WithNamespace(testenv.Scope("cleanroom-test")), ctrexec.WithRun(locks, lock.ID),
		ctrexec.WithStateDir(state), ctrexec.WithLogger(hclog.NewNullLogger())}, extra...)
	e, err := ctrexec.New(ctx, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	img, err := e.Resolve(ctx, ctrexec.OCIArchive+archive)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(img.Digest, "sha256:") {
		t.Fatalf("digest %q", img.Digest)
	}
	return e, img
}

var seq int

func spec(img sandbox.Image, script string) sandbox.Spec {
	seq++
	return sandbox.Spec{
		ID:     fmt.Sprintf("test-%d-%d", os.Getpid(), seq),
		Image:  img,
		Args:   []string{"/bin/sh", "-e", "-c", script},
		Env:    []string{"PATH=/bin:/usr/bin", "HOME=/tmp", "MARK=set-by-test"},
		Cwd:    "/",
		Limits: sandbox.Limits{MemoryBytes: 256 << 20, CPUs: 1, Pids: 128},
	}
}

func run(t *testing.T, e *ctrexec.Executor, s sandbox.Spec) (sandbox.Result, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	res, err := e.Run(context.Background(), s, &out, &errb)
	if err != nil {
		t.Fatalf("Run: %v (stderr: %s)", err, errb.String())
	}
	return res, out.String(), errb.String()
}

func TestRunOutputExitAndEnv(t *testing.T) {
	e, img := newExecutor(t)
	res, out, _ := run(t, e, spec(img, `echo "hello $MARK"; env | sort > /dev/stderr; exit 3`))
	if res.ExitCode != 3 || res.TimedOut || res.OOMKilled {
		t.Fatalf("result %+v", res)
	}
	if out != "hello set-by-test\n" {
		t.Fatalf("stdout %q", out)
	}
}

func TestHardening(t *testing.T) {
	e, img := newExecutor(t)
	script := `
grep -E '^(NoNewPrivs|Seccomp|CapEff|CapBnd):' /proc/self/status
if touch /rootfs-write 2>/dev/null; then echo "ROOT WRITABLE"; fi
touch /tmp/ok && echo tmp-writable
if mount -t tmpfs none /mnt 2>/dev/null; then echo "MOUNT WORKED"; fi
if mknod /tmp/blk b 8 0 2>/dev/null; then echo "MKNOD WORKED"; fi
if echo 1 > /proc/sys/kernel/sysrq 2>/dev/null; then echo "PROCSYS WRITABLE"; fi
ip link 2>/dev/null | grep -o '^[0-9]*: [a-z0-9]*' || cat /proc/net/dev
`
	res, out, errOut := run(t, e, spec(img, script))
	if res.ExitCode != 0 {
		t.Fatalf("exit %d: %s %s", res.ExitCode, out, errOut)
	}
	for _, bad := range []string{"ROOT WRITABLE", "MOUNT WORKED", "MKNOD WORKED", "PROCSYS WRITABLE"} {
		if strings.Contains(out, bad) {
			t.Errorf("hardening hole: %s\n%s", bad, out)
		}
	}
	for _, want := range []string{"NoNewPrivs:\t1", "Seccomp:\t2", "tmp-writable"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	// CAP_SYS_ADMIN is bit 21, NET_RAW 13, NET_ADMIN 12, SYS_PTRACE 19.
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && (k == "CapEff" || k == "CapBnd") {
			var caps uint64
			fmt.Sscanf(strings.TrimSpace(v), "%x", &caps)
			for _, bit := range []uint{21, 13, 12, 19, 16, 17, 2, 27, 25} {
				if caps&(1<<bit) != 0 {
					t.Errorf("%s has capability bit %d: %s", k, bit, v)
				}
			}
		}
	}
}

func TestTimeoutKills(t *testing.T) {
	e, img := newExecutor(t)
	s := spec(img, "sleep 600")
	s.Timeout = time.Second
	start := time.Now()
	res, _, _ := run(t, e, s)
	if !res.TimedOut || !res.Failed() {
		t.Fatalf("result %+v", res)
	}
	if d := time.Since(start); d > 40*time.Second {
		t.Fatalf("timeout took %v", d)
	}
}

func TestOOMReported(t *testing.T) {
	e, img := newExecutor(t)
	s := spec(img, `x=a; while true; do x="$x$x"; done`)
	s.Limits.MemoryBytes = 32 << 20
	res, _, _ := run(t, e, s)
	if !res.OOMKilled {
		t.Fatalf("expected OOM, got %+v", res)
	}
}

func TestCancelKillsAndCleansUp(t *testing.T) {
	e, img := newExecutor(t)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(time.Second); cancel() }()
	s := spec(img, "sleep 600")
	res, err := e.Run(ctx, s, &bytes.Buffer{}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Cancelled {
		t.Fatalf("result %+v", res)
	}
}

func TestWorkspaceBindMount(t *testing.T) {
	e, img := newExecutor(t)
	ws := t.TempDir()
	os.WriteFile(filepath.Join(ws, "in.txt"), []byte("input"), 0o644)
	s := spec(img, "cat in.txt > out.txt; echo -n more >> out.txt")
	s.Cwd = "/workspace"
	s.Mounts = []sandbox.Mount{{Source: ws, Destination: "/workspace"}}
	res, _, errOut := run(t, e, s)
	if res.ExitCode != 0 {
		t.Fatalf("exit %d: %s", res.ExitCode, errOut)
	}
	b, _ := os.ReadFile(filepath.Join(ws, "out.txt"))
	if string(b) != "inputmore" {
		t.Fatalf("out.txt = %q", b)
	}
}
