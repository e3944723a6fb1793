package ctrexec_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/internal/clitest"
	"github.com/cleanroom-ci/cleanroom/internal/testenv"
	ctrexec "github.com/cleanroom-ci/cleanroom/sandbox/containerd"
)

// TestPrepareCancelledLeavesNothing cancels Prepare's context at moments
// spread over a whole Prepare (image lookup, lease, snapshot and container
// create, task create): whatever Prepare returns, once the caller has
// discarded what it got, nothing of the sandbox may be left in containerd.
// A create call cancelled while the daemon carries it out must not lose
// the container or task it made.
func TestPrepareCancelledLeavesNothing(t *testing.T) {
	e, img := newExecutor(t)
	cfg := clitest.Config{Namespace: testenv.Scope("cleanroom-test"), StateDir: t.TempDir(), Address: ctrexec.DefaultAddress}
	clitest.RequireNoResidue(t, cfg)

	// How long an uncancelled Prepare takes here, to spread the cancels.
	start := time.Now()
	p, err := e.Prepare(context.Background(), spec(img, "true"), &bytes.Buffer{}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	full := time.Since(start)
	if err := p.Discard(); err != nil {
		t.Fatal(err)
	}
	clitest.RequireNoResidue(t, cfg)

	const tries = 24
	var cancelledIn, prepared int
	for i := range tries {
		delay := full * time.Duration(i) / (tries - 2) // the last ones cancel after Prepare returned
		ctx, cancel := context.WithCancel(context.Background())
		timer := time.AfterFunc(delay, cancel)
		p, err := e.Prepare(ctx, spec(img, "echo must-not-run"), &bytes.Buffer{}, &bytes.Buffer{})
		timer.Stop()
		cancel()
		switch {
		case err != nil:
			cancelledIn++
			if !errors.Is(err, context.Canceled) {
				t.Errorf("cancel after %v: error %v does not say the context was cancelled", delay, err)
			}
		default:
			prepared++
			// A prepared sandbox whose run is cancelled starts nothing
			// and removes itself.
			res, err := p.Start(ctx)
			if err != nil || !res.Cancelled {
				t.Errorf("cancel after %v: Start = %+v, %v; want Cancelled", delay, res, err)
			}
			if err := p.Discard(); err != nil {
				t.Errorf("Discard after Start: %v", err)
			}
		}
		if left := clitest.Residue(t, cfg); len(left) > 0 {
			t.Fatalf("cancel after %v of a %v Prepare (err %v): left behind:\n%s", delay, full, err, strings.Join(left, "\n"))
		}
	}
	t.Logf("Prepare takes %v; %d cancelled inside Prepare, %d after", full, cancelledIn, prepared)
	if cancelledIn == 0 {
		t.Fatal("no cancel landed inside Prepare: the test proves nothing")
	}
}
