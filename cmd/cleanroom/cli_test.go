package main

import (
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/cleanroom-ci/cleanroom/internal/clitest"
	"github.com/cleanroom-ci/cleanroom/internal/testenv"
	"github.com/cleanroom-ci/cleanroom/sandbox/imagepack"
)

// These tests drive the built binary (internal/clitest) where a message or
// an output needs a real run; the pure parts are tested directly.
var cliCfg = clitest.Config{
	Namespace: testenv.Scope("cleanroom-cli"),
	StateDir:  testenv.Scope("/run/cleanroom-cli"),
}

// exitCode returns the exit status of a finished command, failing the test
// when the process did not exit normally (killed by a signal).
func exitCode(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	ee, ok := err.(*exec.ExitError)
	if !ok {
		t.Fatalf("run cleanroom: %v", err)
	}
	if !ee.Exited() {
		t.Fatalf("cleanroom did not exit, it was killed: %v", ee)
	}
	return ee.ExitCode()
}

// leftoverLocks lists run locks and staging directories left in the state dir.
func leftoverLocks(t *testing.T) []string {
	t.Helper()
	var left []string
	for _, d := range []string{"locks", "runs"} {
		ents, _ := os.ReadDir(filepath.Join(cliCfg.StateDir, d))
		for _, e := range ents {
			left = append(left, d+"/"+e.Name())
		}
	}
	return left
}

// `cleanroom run | head -1`: the reader goes away before the run prints its
// result. The run must finish with its own exit code and clean up, not die
// of SIGPIPE with its sandbox still standing.
func TestClosedStdoutDoesNotKillTheRun(t *testing.T) {
	for _, tc := range []struct {
		name       string
		stderrToo  bool
		outputJSON bool
	}{
		{name: "stdout"},
		{name: "stdout-json", outputJSON: true},
		{name: "stdout-and-stderr", stderrToo: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := clitest.New(t, cliCfg)
			e.Pipeline(`version: 1
image: IMAGE
steps:
  - name: talk
    run: for i in 1 2 3 4 5; do echo line $i; done; mkdir -p out; echo x > out/x
artifacts: [out/x]
`)
			args := []string{"run"}
			if tc.outputJSON {
				args = append(args, "--output", "json")
			}
			cmd := e.Command(nil, args...)
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			r.Close() // every write to w is now EPIPE (and SIGPIPE)
			cmd.Stdout = w
			var stderr clitest.LockedBuffer
			cmd.Stderr = &stderr
			if tc.stderrToo {
				cmd.Stderr = w
			}
			err = cmd.Run()
			w.Close()
			if code := exitCode(t, err); code != 0 {
				t.Fatalf("exit %d, want 0\n%s", code, stderr.String())
			}
			if _, err := os.Stat(filepath.Join(e.Dir, ".cleanroom", "provenance.intoto.json")); err != nil {
				t.Fatalf("the run did not finish: %v", err)
			}
			clitest.RequireNoResidue(t, cliCfg)
			if left := leftoverLocks(t); len(left) > 0 {
				t.Fatalf("left behind in the state dir: %s", strings.Join(left, ", "))
			}
		})
	}
}

// An audit run ends with one allowlist to paste; a name that resolves to a
// special address stays denied and is listed as the explicit IP rule it
// needs.
func TestAuditRunPrintsCombinedAllowlist(t *testing.T) {
	e := clitest.New(t, cliCfg)
	clitest.AddHostsEntry(t, "127.0.0.1", "cache.cleanroom-ux.test")
	e.Pipeline(`version: 1
image: IMAGE
egress: {mode: audit}
steps:
  - name: one
    run: wget -q -O /dev/null http://cache.cleanroom-ux.test:18080/a || true
  - name: two
    run: wget -q -O /dev/null http://cache.cleanroom-ux.test:18080/b || true
`)
	r := e.Run(nil, "run")
	if r.Code != 0 {
		t.Fatalf("%s", r)
	}
	want := "audit: the egress.allow this run needs under enforce (paste into cleanroom.yaml):\n" +
		"egress:\n" +
		"  allow:\n" +
		`    - "127.0.0.1:18080"  # special address, denied even in audit mode: only this explicit IP rule allows it; steps: one, two` + "\n"
	if !strings.Contains(r.Stdout, want) {
		t.Fatalf("stdout lacks\n%s\n%s", want, r)
	}
	clitest.RequireNoResidue(t, cliCfg)
}

// A fetch prints a progress line on a terminal, and nothing when stderr is
// a pipe or the log format is json.
func TestRunFetchProgressOnTerminalOnly(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "dep-bytes") }))
	defer srv.Close()
	target := strings.TrimPrefix(srv.URL, "http://")
	e := clitest.New(t, cliCfg)
	e.Pipeline(`version: 1
image: IMAGE
steps:
  - name: get
    run: wget -q -O dep.bin http://` + target + `/dep.bin
`)
	line := "fetch [get] GET http://" + target + "/dep.bin: 200, 9B in "
	for _, tc := range []struct {
		name string
		tty  bool
		args []string
		want bool
	}{
		{"terminal", true, nil, true},
		{"terminal, json logs", true, []string{"--log-format", "json"}, false},
		{"pipe", false, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := e.Command(nil, append(tc.args, "run", "--allow", target)...)
			var stderr clitest.LockedBuffer
			cmd.Stderr = &stderr
			var copied chan struct{}
			if tc.tty {
				ptmx, tty, err := pty.Open()
				if err != nil {
					t.Fatalf("open a pty: %v", err)
				}
				defer ptmx.Close()
				cmd.Stderr = tty
				copied = make(chan struct{})
				go func() { io.Copy(&stderr, ptmx); close(copied) }()
				defer tty.Close()
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				tty.Close() // the child holds it; EOF (EIO) on the master when it exits
				err = cmd.Wait()
				<-copied
				if code := exitCode(t, err); code != 0 {
					t.Fatalf("exit %d\n%s", code, stderr.String())
				}
			} else if code := exitCode(t, cmd.Run()); code != 0 {
				t.Fatalf("exit %d\n%s", code, stderr.String())
			}
			if got := strings.Contains(stderr.String(), line); got != tc.want {
				t.Fatalf("progress line %q shown: %v, want %v\n%s", line, got, tc.want, stderr.String())
			}
			if !tc.want && strings.Contains(stderr.String(), "fetch [") {
				t.Fatalf("progress output without a terminal:\n%s", stderr.String())
			}
		})
	}
	clitest.RequireNoResidue(t, cliCfg)
}

// A run with its own --state-dir leaves no mount in it: the directory can
// be removed afterwards.
func TestStateDirElsewhereLeavesNoMount(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	cfg := clitest.Config{Namespace: cliCfg.Namespace, StateDir: state}
	e := clitest.New(t, cfg)
	e.Pipeline("version: 1\nimage: IMAGE\nsteps:\n  - name: a\n    run: \"true\"\n")
	if r := e.Run(nil, "run"); r.Code != 0 {
		t.Fatalf("%s", r)
	}
	clitest.RequireNoResidue(t, cfg)
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], state) {
			t.Errorf("left mounted: %s", f[4])
		}
	}
	if err := os.RemoveAll(state); err != nil {
		t.Errorf("remove the state dir: %v", err)
	}
}

// `image import` killed in the middle leaves a lease (and the snapshots it
// holds) labelled with its run, which the next run reaps.
func TestInterruptedImageImportIsReaped(t *testing.T) {
	e := clitest.New(t, cliCfg)
	root := filepath.Join(t.TempDir(), "rootfs")
	os.MkdirAll(root, 0o755)
	big := make([]byte, 48<<20)
	rand.Read(big) // incompressible: the import takes a while
	if err := os.WriteFile(filepath.Join(root, "blob"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := imagepack.Image(root, imagepack.Options{})
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "big.tar")
	if err := imagepack.WriteOCIArchive(archive, img, "cleanroom.test/big:latest"); err != nil {
		t.Fatal(err)
	}

	cmd := e.Command(nil, "image", "import", archive)
	var out clitest.LockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	clitest.WaitFor(t, time.Minute, func() bool {
		l, _ := exec.Command("ctr", "--address", clitest.Address, "-n", cliCfg.Namespace, "leases", "ls", "-q").Output()
		return strings.TrimSpace(string(l)) != ""
	})
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	cmd.Wait()
	if left := clitest.Residue(t, cliCfg); len(left) == 0 {
		t.Fatalf("the import finished before it was killed; nothing to reap\n%s", out.String())
	}

	e.Pipeline("version: 1\nimage: IMAGE\nsteps:\n  - name: a\n    run: \"true\"\n")
	if r := e.Run(nil, "run"); r.Code != 0 {
		t.Fatalf("%s", r)
	}
	clitest.RequireNoResidue(t, cliCfg)
}
