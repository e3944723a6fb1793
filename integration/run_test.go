package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/internal/clitest"
)

func TestTwoStepsPassDataThroughWorkspace(t *testing.T) {
	e := newEnv(t)
	e.pipeline(`version: 1
image: IMAGE
env: {WORD: cleanroom}
steps:
  - name: write
    run: mkdir -p out && echo "$WORD" > out/word.txt
  - name: read
    run: |
      test "$(cat out/word.txt)" = cleanroom
      echo "read:$(cat out/word.txt)"
      pwd
`)
	r := e.run(nil, "run", "--output", "json")
	if r.code != 0 {
		t.Fatalf("%s", r)
	}
	s := parseSummary(t, r)
	if s.status("write") != "ok" || s.status("read") != "ok" {
		t.Fatalf("summary %+v", s)
	}
	if len(s.Images) != 1 || !strings.HasPrefix(s.Images[0].Digest, "sha256:") {
		t.Fatalf("image digest not recorded: %+v", s.Images)
	}
	if !strings.Contains(r.stderr, "[read] read:cleanroom") || !strings.Contains(r.stderr, "[read] /workspace") {
		t.Fatalf("step output not streamed with prefix:\n%s", r.stderr)
	}
	log, err := os.ReadFile(filepath.Join(e.dir, ".cleanroom", "logs", "read.log"))
	if err != nil || !strings.Contains(string(log), "read:cleanroom") {
		t.Fatalf("step log: %q, %v", log, err)
	}
	for _, f := range []string{"egress.jsonl", "summary.json"} {
		if _, err := os.Stat(filepath.Join(e.dir, ".cleanroom", f)); err != nil {
			t.Errorf("missing output %s: %v", f, err)
		}
	}
	requireNoResidue(t)
}

func TestFailingStepExitsOneAndStopsThePipeline(t *testing.T) {
	e := newEnv(t)
	e.pipeline(`version: 1
image: IMAGE
steps:
  - name: ok
    run: "true"
  - name: broken
    run: |
      echo about to fail
      exit 7
  - name: never
    run: touch never-ran
`)
	r := e.run(nil, "run", "--output", "json")
	if r.code != 1 {
		t.Fatalf("want exit 1 (build failure):\n%s", r)
	}
	s := parseSummary(t, r)
	if s.Failed != "broken" || s.status("broken") != "failed" || s.status("never") != "skipped" {
		t.Fatalf("summary %+v", s)
	}
	if s.Steps[1].ExitCode != 7 {
		t.Fatalf("exit code %d, want 7", s.Steps[1].ExitCode)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "never-ran")); err == nil {
		t.Fatal("a step after the failure ran")
	}
	// "never" was prepared while "broken" ran (look-ahead) and then
	// discarded: no log, no container, no namespace.
	if _, err := os.Stat(filepath.Join(e.dir, ".cleanroom", "logs", "never.log")); err == nil {
		t.Fatal("a skipped step has a log")
	}
	requireNoResidue(t)
}

func TestStepSubset(t *testing.T) {
	e := newEnv(t)
	e.pipeline(`version: 1
image: IMAGE
steps:
  - name: a
    run: touch a
  - name: b
    run: touch b
`)
	// The steps' files stay in a fresh workspace; reusing the directory
	// shows on the host which step ran.
	r := e.run(nil, "run", "--step", "b", "--output", "json", "--reuse-workspace")
	if r.code != 0 {
		t.Fatalf("%s", r)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "a")); err == nil {
		t.Fatal("step a ran")
	}
	if _, err := os.Stat(filepath.Join(e.dir, "b")); err != nil {
		t.Fatal("step b did not run")
	}
	r = e.run(nil, "run", "--step", "nope")
	if r.code != 2 || !strings.Contains(r.stderr, "nope") {
		t.Fatalf("unknown step: %s", r)
	}
}

func TestTimeoutIsReportedAndKilled(t *testing.T) {
	e := newEnv(t)
	e.pipeline(`version: 1
image: IMAGE
steps:
  - name: hang
    run: sleep 600
    timeout: 2s
`)
	start := time.Now()
	r := e.run(nil, "run", "--output", "json")
	if r.code != 1 {
		t.Fatalf("want exit 1:\n%s", r)
	}
	if s := parseSummary(t, r); s.status("hang") != "timeout" {
		t.Fatalf("summary %+v", s)
	}
	if d := time.Since(start); d > 60*time.Second {
		t.Fatalf("took %v", d)
	}
	requireNoResidue(t)
}

func TestMemoryAndPidsLimits(t *testing.T) {
	e := newEnv(t)
	e.pipeline(`version: 1
image: IMAGE
steps:
  - name: membomb
    run: x=a; while true; do x="$x$x"; done
    resources: {memory: 32MiB}
`)
	r := e.run(nil, "run", "--output", "json")
	if r.code != 1 || parseSummary(t, r).status("membomb") != "oom" {
		t.Fatalf("memory bomb not reported as OOM:\n%s", r)
	}

	e.pipeline(`version: 1
image: IMAGE
steps:
  - name: forkbomb
    run: |
      i=0
      while [ $i -lt 100 ]; do sleep 30 & i=$((i+1)); done
      echo all-forked
    resources: {pids: 20}
    timeout: 20s
`)
	r = e.run(nil, "run", "--output", "json")
	if r.code != 1 || strings.Contains(r.stderr, "all-forked") {
		t.Fatalf("pids limit not enforced:\n%s", r)
	}
	if !strings.Contains(r.stderr, "fork") && !strings.Contains(r.stderr, "Resource temporarily unavailable") {
		t.Fatalf("expected a fork failure in the output:\n%s", r.stderr)
	}
	requireNoResidue(t)
}

func TestNoNetworkButLoopback(t *testing.T) {
	e := newEnv(t)
	// Inspect, never send: interfaces, routes and resolver config only.
	e.pipeline(`version: 1
image: IMAGE
steps:
  - name: probe
    run: |
      echo "ifaces=$(ls /sys/class/net | tr '\n' ',')"
      echo "routes4=$(tail -n +2 /proc/net/route | wc -l)"
      echo "routes6=$(grep -vc ' lo$' /proc/net/ipv6_route || true)"
      if [ -s /etc/resolv.conf ]; then echo "resolver=present"; else echo "resolver=absent"; fi
`)
	r := e.run(nil, "run")
	if r.code != 0 {
		t.Fatalf("%s", r)
	}
	for _, want := range []string{"ifaces=lo,", "routes4=0", "routes6=0", "resolver=absent"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("want %q in step output:\n%s", want, r.stderr)
		}
	}
}

func TestSandboxRefusesEscapes(t *testing.T) {
	e := newEnv(t)
	e.pipeline(`version: 1
image: IMAGE
steps:
  - name: escape
    run: |
      if touch /escape 2>/dev/null; then echo "ESCAPE: wrote to /"; fi
      if mount -t tmpfs none /mnt 2>/dev/null; then echo "ESCAPE: mounted"; fi
      if cat /proc/1/environ 2>/dev/null | tr '\0' '\n' | grep -q CLEANROOM_HOST_MARKER; then echo "ESCAPE: host environ"; fi
      if env | grep -q CLEANROOM_HOST_MARKER; then echo "ESCAPE: runner env"; fi
      if grep -rqs runner-secret-value /proc/*/environ; then echo "ESCAPE: secret"; fi
      if ls /run/containerd/containerd.sock 2>/dev/null; then echo "ESCAPE: containerd socket"; fi
      if unshare -n true 2>/dev/null; then echo "ESCAPE: unshare"; fi
      echo probes-done
`)
	r := e.run([]string{"CLEANROOM_HOST_MARKER=runner-secret-value"}, "run")
	if r.code != 0 || !strings.Contains(r.stderr, "probes-done") {
		t.Fatalf("%s", r)
	}
	if strings.Contains(r.stderr, "ESCAPE") {
		t.Fatalf("sandbox escape:\n%s", r.stderr)
	}
	out, _ := os.ReadFile(filepath.Join(e.dir, ".cleanroom", "logs", "escape.log"))
	if strings.Contains(string(out), "runner-secret-value") {
		t.Fatal("runner environment reached the step log")
	}
}

func TestConfigErrorsExitTwoWithPosition(t *testing.T) {
	e := newEnv(t)
	e.pipeline(`version: 1
image: IMAGE
steps:
  - name: a
    run: "true"
    timeout: 10 minutes
`)
	r := e.run(nil, "run")
	if r.code != 2 || !strings.Contains(r.stderr, `cleanroom.yaml:6:14: steps[0].timeout: invalid duration "10 minutes"`) {
		t.Fatalf("%s", r)
	}
	e.pipeline(`version: 1
image: IMAGE
steps:
  - name: a
    run: "true"
`)
	r = e.run(nil, "run", "--allow", "not a rule")
	if r.code != 2 || !strings.Contains(r.stderr, "--allow") {
		t.Fatalf("%s", r)
	}
	r = e.run(nil, "lint")
	if r.code != 0 {
		t.Fatalf("lint: %s", r)
	}
}

// A runner killed with SIGKILL mid-step leaves a container, a snapshot and
// a namespace behind; the next run must reap all of it.
func TestNextRunReapsAfterSIGKILL(t *testing.T) {
	e := newEnv(t)
	e.pipeline(`version: 1
image: IMAGE
steps:
  - name: long
    run: echo started; sleep 600
`)
	cmd := e.command(nil, "run")
	var errb lockedBuffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, func() bool { return strings.Contains(errb.String(), "[long] started") })
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	cmd.Wait()
	if len(residue(t)) == 0 {
		t.Fatal("expected residue right after SIGKILL (the test would prove nothing)")
	}

	e.pipeline(`version: 1
image: IMAGE
steps:
  - name: quick
    run: "true"
`)
	if r := e.run(nil, "run"); r.code != 0 {
		t.Fatalf("%s", r)
	}
	requireNoResidue(t)
}

// SIGINT and SIGTERM stop the running task, clean up and exit 2.
func TestSignalsCancelAndCleanUp(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			e := newEnv(t)
			e.pipeline(`version: 1
image: IMAGE
steps:
  - name: long
    run: echo started; sleep 600
  - name: after
    run: touch after
`)
			cmd := e.command(nil, "run")
			var errb lockedBuffer
			cmd.Stderr = &errb
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 60*time.Second, func() bool { return strings.Contains(errb.String(), "[long] started") })
			start := time.Now()
			cmd.Process.Signal(sig)
			err := cmd.Wait()
			if ee, ok := err.(interface{ ExitCode() int }); !ok || ee.ExitCode() != 2 {
				t.Fatalf("exit: %v\n%s", err, errb.String())
			}
			if d := time.Since(start); d > 30*time.Second {
				t.Fatalf("took %v to stop", d)
			}
			if _, err := os.Stat(filepath.Join(e.dir, "after")); err == nil {
				t.Fatal("a later step ran after cancel")
			}
			requireNoResidue(t)
		})
	}
}

// --secret passes one variable of the runner's environment to the steps;
// its value is masked in the output and the logs, and recorded nowhere.
func TestSecretIsPassedAndMasked(t *testing.T) {
	e := newEnv(t)
	e.pipeline(`version: 1
image: IMAGE
steps:
  - name: use
    run: |
      test "$DEPLOY_TOKEN" = "tok-9f8e7d6c5b"
      echo "token is $DEPLOY_TOKEN"
      echo "other is $OTHER_VAR"
`)
	r := e.run([]string{"DEPLOY_TOKEN=tok-9f8e7d6c5b", "OTHER_VAR=not-passed"}, "run", "--secret", "DEPLOY_TOKEN")
	if r.code != 0 {
		t.Fatalf("%s", r)
	}
	if !strings.Contains(r.stderr, "token is [masked]") || strings.Contains(r.stderr, "not-passed") {
		t.Fatalf("output:\n%s", r.stderr)
	}
	filepath.Walk(filepath.Join(e.dir, ".cleanroom"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			if b, _ := os.ReadFile(p); strings.Contains(string(b), "tok-9f8e7d6c5b") {
				t.Errorf("secret value in %s", p)
			}
		}
		return nil
	})
	if r := e.run(nil, "run", "--secret", "UNSET_SECRET_VAR"); r.code != 2 || !strings.Contains(r.stderr, "UNSET_SECRET_VAR") {
		t.Fatalf("unset secret: %s", r)
	}
}

// TestConcurrentRunsImportOneArchive starts four runs at once on an
// archive the store has never seen (an agent running jobs side by side
// does this with every new builder image): each import must succeed,
// none may delete what another is importing.
func TestConcurrentRunsImportOneArchive(t *testing.T) {
	e := newEnv(t)
	data, err := os.ReadFile(e.image)
	if err != nil {
		t.Fatal(err)
	}
	// Two more end-of-archive blocks: the same image, a digest never seen.
	fresh := filepath.Join(e.dir, "fresh.tar")
	nonce := make([]byte, 1024)
	copy(nonce[1000:], fmt.Sprint(time.Now().UnixNano()))
	if err := os.WriteFile(fresh, append(data, nonce...), 0o644); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	results := make([]result, 4)
	for i := range results {
		ws := filepath.Join(e.dir, fmt.Sprintf("ws%d", i))
		os.MkdirAll(ws, 0o755)
		os.WriteFile(filepath.Join(ws, "cleanroom.yaml"), []byte("version: 1\nimage: oci-archive:"+fresh+"\nsteps:\n  - name: s\n    run: echo ok\n    timeout: 1m\n"), 0o644)
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = e.run(nil, append(baseArgs(), "run", "-f", filepath.Join(ws, "cleanroom.yaml"))...)
		}()
	}
	wg.Wait()
	for i, r := range results {
		if r.code != 0 {
			t.Errorf("run %d: %s", i, r)
		}
	}
	clitest.RequireNoResidue(t, cfg)
}

// TestPreparedStepTimeoutCountsFromItsStart: the next step is prepared
// while the one before runs; its time limit must count from its own start,
// not from its preparation.
func TestPreparedStepTimeoutCountsFromItsStart(t *testing.T) {
	e := newEnv(t)
	e.pipeline(`version: 1
image: IMAGE
steps:
  - name: slow
    run: sleep 3
    timeout: 1m
  - name: quick
    run: sleep 1
    timeout: 2s
`)
	r := e.run(nil, "run", "--output", "json")
	if r.code != 0 {
		t.Fatalf("the second step was timed from its preparation:\n%s", r)
	}
	requireNoResidue(t)
}

// `sudo cleanroom run` in a user's checkout: the step can write into the
// user's existing directories, and the artifact copied back, with the
// directory made for it, belongs to the user, not root.
func TestUserOwnedCheckoutIsWritableAndArtifactsStayTheUsers(t *testing.T) {
	const uid, gid = 1000, 1000
	e := newEnv(t)
	os.MkdirAll(filepath.Join(e.dir, "sub"), 0o755)
	os.WriteFile(filepath.Join(e.dir, "sub", "src.txt"), []byte("source"), 0o644)
	e.pipeline(`version: 1
image: IMAGE
steps:
  - name: build
    run: |
      echo edited >> sub/src.txt
      cat sub/src.txt > sub/app
      mkdir -p bin && echo tool > bin/tool
artifacts: ["sub/app", "bin/tool"]
`)
	err := filepath.Walk(e.dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
	if err != nil {
		t.Fatal(err)
	}
	r := e.run(nil, "run")
	if r.code != 0 {
		t.Fatalf("a step writing into the user's existing directory: %s", r)
	}
	for _, rel := range []string{"sub/app", "bin", "bin/tool"} {
		fi, err := os.Lstat(filepath.Join(e.dir, rel))
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != uid || st.Gid != gid {
			t.Errorf("%s copied back owned by %d:%d, want the checkout's owner %d:%d", rel, st.Uid, st.Gid, uid, gid)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(e.dir, "sub", "app")); string(b) != "sourceedited\n" {
		t.Errorf("sub/app = %q", b)
	}
	requireNoResidue(t)
}
