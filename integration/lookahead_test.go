package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/internal/clitest"
)

// While a step runs, the next one is prepared (namespace, proxy, container,
// task). These tests end the run at moments spread over that preparation -
// from the moment it begins to well after it finished - and require that
// nothing of the prepared step is left behind, whichever call the signal
// or the timeout interrupted.

// lookaheadPipeline is a long first step and a second step that must
// never run; the second is prepared while the first runs.
const lookaheadPipeline = `version: 1
image: IMAGE
steps:
  - name: long
    run: echo started; sleep 600%s
  - name: after
    run: touch after
`

func TestSignalWhileNextStepIsPreparedLeavesNothing(t *testing.T) {
	// The signal is sent a while after a span of the second step's
	// preparation appears in the --trace file (written as spans end):
	// "netns+proxy" ends as the sandbox's creation begins (image, lease,
	// snapshot, container), "container.create" as the task's creation
	// (the shim, runc create) begins.
	type moment struct {
		span  string
		delay time.Duration
	}
	var moments []moment
	for _, d := range []time.Duration{0, 2, 5, 10, 20, 40} {
		moments = append(moments, moment{"netns+proxy", d * time.Millisecond})
	}
	for _, d := range []time.Duration{0, 20, 50, 100, 150, 250} {
		moments = append(moments, moment{"container.create", d * time.Millisecond})
	}
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			for _, m := range moments {
				when := fmt.Sprintf("%v after the span %s of the prepared step", m.delay, m.span)
				e := newEnv(t)
				e.pipeline(fmt.Sprintf(lookaheadPipeline, ""))
				trace := filepath.Join(e.dir, "trace.jsonl")
				cmd := e.command(nil, "run", "--trace", trace)
				var errb lockedBuffer
				cmd.Stderr = &errb
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				if !waitSpan(trace, m.span, "after", 60*time.Second) {
					cmd.Process.Kill()
					cmd.Wait()
					t.Fatalf("%s: the span never appeared:\n%s", when, errb.String())
				}
				time.Sleep(m.delay)
				start := time.Now()
				cmd.Process.Signal(sig)
				err := cmd.Wait()
				if ee, ok := err.(interface{ ExitCode() int }); !ok || ee.ExitCode() != 2 {
					t.Fatalf("%s: exit %v\n%s", when, err, errb.String())
				}
				if d := time.Since(start); d > 30*time.Second {
					t.Fatalf("%s: took %v to stop", when, d)
				}
				if _, err := os.Stat(filepath.Join(e.dir, "after")); err == nil {
					t.Fatalf("%s: a later step ran after the signal", when)
				}
				if left := clitest.Residue(t, cfg); len(left) > 0 {
					t.Fatalf("%s: left behind:\n%s", when, strings.Join(left, "\n"))
				}
			}
		})
	}
}

// waitSpan polls a --trace file until a span of the step (named in its
// "step" or "id" attribute) appears.
func waitSpan(trace, span, step string, d time.Duration) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		b, _ := os.ReadFile(trace)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, `"span":"`+span+`"`) && (strings.Contains(l, `"step":"`+step+`"`) || strings.Contains(l, "-"+step+`"`)) {
				return true
			}
		}
	}
	return false
}

// The first step times out at moments spread over the second one's
// preparation; the run fails and the prepared step is discarded.
func TestTimeoutWhileNextStepIsPreparedLeavesNothing(t *testing.T) {
	const tries = 8
	for i := range tries {
		timeout := 50*time.Millisecond + time.Duration(i)*75*time.Millisecond
		e := newEnv(t)
		e.pipeline(fmt.Sprintf(lookaheadPipeline, fmt.Sprintf("\n    timeout: %dms", timeout.Milliseconds())))
		r := e.run(nil, "run")
		if r.code != 1 || !strings.Contains(r.stderr, "timed out") {
			t.Fatalf("timeout %v: %s", timeout, r)
		}
		if _, err := os.Stat(filepath.Join(e.dir, "after")); err == nil {
			t.Fatalf("timeout %v: a later step ran after the timeout", timeout)
		}
		requireNoResidue(t)
	}
}
