package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
	"github.com/cleanroom-ci/cleanroom/sandbox"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
)

// fakeExecutor runs no sandbox: a step's script "exit N" exits N, any
// other script succeeds after writing it to the workspace's "ran" file.
// Its networks are loopback listeners of the test process. It records what
// was prepared, started and discarded, so runner.Run's control flow is
// tested without root.
type fakeExecutor struct {
	mu                          sync.Mutex
	prepared, started, discards []string
	networks                    int
	closedNetworks              int
}

func (f *fakeExecutor) Resolve(_ context.Context, ref string) (sandbox.Image, error) {
	return sandbox.Image{Ref: ref, Name: ref, Digest: "sha256:" + strings.Repeat("ab", 32)}, nil
}

func (f *fakeExecutor) Run(ctx context.Context, s sandbox.Spec, stdout, stderr io.Writer) (sandbox.Result, error) {
	p, err := f.Prepare(ctx, s, stdout, stderr)
	if err != nil {
		return sandbox.Result{}, err
	}
	return p.Start(ctx)
}

func (f *fakeExecutor) Info(context.Context) (sandbox.Info, error) {
	return sandbox.Info{Backend: "fake", Runtime: "fake"}, nil
}

func (f *fakeExecutor) Close() error { return nil }

func (f *fakeExecutor) NewNetwork(context.Context, sandbox.NetworkSpec) (sandbox.Network, error) {
	f.mu.Lock()
	f.networks++
	f.mu.Unlock()
	return &fakeNetwork{f: f}, nil
}

type fakeNetwork struct {
	f    *fakeExecutor
	once sync.Once
}

func (n *fakeNetwork) Listen(network, addr string) (net.Listener, error) {
	return net.Listen(network, "127.0.0.1:0")
}

func (n *fakeNetwork) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return (&net.Dialer{}).DialContext(ctx, network, addr)
}

func (n *fakeNetwork) Close() error {
	n.once.Do(func() { n.f.mu.Lock(); n.f.closedNetworks++; n.f.mu.Unlock() })
	return nil
}

func (f *fakeExecutor) Prepare(_ context.Context, s sandbox.Spec, stdout, _ io.Writer) (sandbox.Prepared, error) {
	if s.Network == nil {
		return nil, fmt.Errorf("step %s got no network", s.ID)
	}
	f.mu.Lock()
	f.prepared = append(f.prepared, s.ID)
	f.mu.Unlock()
	return &fakePrepared{f: f, s: s, out: stdout}, nil
}

type fakePrepared struct {
	f   *fakeExecutor
	s   sandbox.Spec
	out io.Writer
}

func (p *fakePrepared) Start(ctx context.Context) (sandbox.Result, error) {
	p.f.mu.Lock()
	p.f.started = append(p.f.started, p.s.ID)
	p.f.mu.Unlock()
	script := p.s.Args[len(p.s.Args)-1]
	res := sandbox.Result{Started: time.Now()}
	var code int
	if _, err := fmt.Sscanf(script, "exit %d", &code); err == nil {
		res.ExitCode = code
	} else {
		fmt.Fprintln(p.out, "ran:", script)
		ws := p.s.Mounts[0].Source
		f, err := os.OpenFile(filepath.Join(ws, "ran"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return res, err
		}
		fmt.Fprintln(f, script)
		f.Close()
	}
	res.Finished = time.Now()
	return res, nil
}

func (p *fakePrepared) Discard() error {
	p.f.mu.Lock()
	p.f.discards = append(p.f.discards, p.s.ID)
	p.f.mu.Unlock()
	return nil
}

type countingSigner struct{ blobs, dsse int }

func (c *countingSigner) SignBlob(context.Context, []byte) ([]byte, error) {
	c.blobs++
	return []byte(`{}`), nil
}
func (c *countingSigner) SignDSSE(context.Context, string, []byte) ([]byte, error) {
	c.dsse++
	return []byte(`{}`), nil
}
func (c *countingSigner) Identity() string { return "test" }

func fakeRun(t *testing.T, yaml string) (*Result, *fakeExecutor, *countingSigner, string, error) {
	t.Helper()
	return fakeRunWith(t, context.Background(), nil, yaml)
}

func fakeRunWith(t *testing.T, ctx context.Context, progress Progress, yaml string) (*Result, *fakeExecutor, *countingSigner, string, error) {
	t.Helper()
	dir := t.TempDir()
	ws := filepath.Join(dir, "ws")
	os.MkdirAll(ws, 0o755)
	p, err := pipeline.Parse(filepath.Join(ws, "cleanroom.yaml"), []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	fe, signer := &fakeExecutor{}, &countingSigner{}
	res, err := Run(ctx, Config{Progress: progress,
		Pipeline: p, Workspace: ws, OutDir: filepath.Join(dir, "out"), StateDir: filepath.Join(dir, "state"),
		// The fresh copy of the workspace needs root (a size-limited
		// filesystem); the fake works on the source directly.
		ReuseWorkspace: true,
		RunID:          "fakerun", Executor: fe, Signer: signer, Version: "test", BuilderID: "https://cleanroom.test/builder",
	})
	return res, fe, signer, ws, err
}

func statuses(res *Result) string {
	var s []string
	for _, st := range res.Steps {
		s = append(s, st.Name+"="+st.Status)
	}
	return strings.Join(s, " ")
}

// TestRunSkipsAfterFailureAndDiscardsLookahead: the step after a failed
// one was prepared ahead; it is discarded, never started, and the rest
// are skipped. Nothing is signed.
func TestRunSkipsAfterFailureAndDiscardsLookahead(t *testing.T) {
	res, fe, signer, ws, err := fakeRun(t, `version: 1
image: docker.io/library/busybox:1
steps:
  - {name: a, run: echo a}
  - {name: b, run: exit 3}
  - {name: c, run: echo c}
  - {name: d, run: echo d}
artifacts: ["ran"]
`)
	if err != nil {
		t.Fatal(err)
	}
	if got := statuses(res); got != "a=ok b=failed c=skipped d=skipped" || res.Failed != "b" {
		t.Fatalf("statuses %q, failed %q", got, res.Failed)
	}
	if strings.Join(fe.started, " ") != "cr-fakerun-0-a cr-fakerun-1-b" {
		t.Fatalf("started %v", fe.started)
	}
	if strings.Join(fe.discards, " ") != "cr-fakerun-2-c" {
		t.Fatalf("discarded %v (prepared %v): the step prepared ahead of the failure must be discarded", fe.discards, fe.prepared)
	}
	if fe.networks != fe.closedNetworks || fe.networks != 3 {
		t.Fatalf("networks made %d, closed %d", fe.networks, fe.closedNetworks)
	}
	if signer.blobs+signer.dsse != 0 {
		t.Fatalf("a failed run signed %d blobs and %d statements", signer.blobs, signer.dsse)
	}
	if b, _ := os.ReadFile(filepath.Join(ws, "ran")); string(b) != "echo a\n" {
		t.Fatalf("workspace shows %q ran", b)
	}
}

// TestRunSignsOnlyOnSuccess: a run whose steps all pass signs its
// artifact and its provenance.
func TestRunSignsOnlyOnSuccess(t *testing.T) {
	res, fe, signer, _, err := fakeRun(t, `version: 1
image: docker.io/library/busybox:1
steps:
  - {name: a, run: echo a}
  - {name: b, run: echo b}
artifacts: ["ran"]
`)
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed != "" || statuses(res) != "a=ok b=ok" {
		t.Fatalf("%s failed=%q", statuses(res), res.Failed)
	}
	if signer.blobs != 1 || signer.dsse != 1 {
		t.Fatalf("signed %d blobs and %d statements, want the artifact and the provenance", signer.blobs, signer.dsse)
	}
	if len(fe.discards) != 0 || fe.networks != fe.closedNetworks {
		t.Fatalf("discards %v, networks %d/%d closed", fe.discards, fe.closedNetworks, fe.networks)
	}
}

// TestInterruptAfterTheStepsIsACancel: an interrupt arriving while the
// artifacts are hashed is the run's cancel (exit 2, "cancelled"), not a
// failure of the build's artifacts (exit 1).
func TestInterruptAfterTheStepsIsACancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res, _, signer, _, err := fakeRunWith(t, ctx, cancelOn{"hashing the artifacts", cancel}, `version: 1
image: docker.io/library/busybox:1
steps:
  - {name: a, run: echo a}
  - {name: b, run: echo b}
artifacts: ["ran"]
`)
	if !errors.Is(err, ErrCancelled) {
		t.Fatalf("err = %v, want ErrCancelled", err)
	}
	if res != nil && res.Failed == ArtifactsStep {
		t.Fatalf("the interrupt was recorded as the artifacts' failure: %q", res.Error)
	}
	if signer.blobs+signer.dsse != 0 {
		t.Fatalf("a cancelled run signed %d blobs and %d statements", signer.blobs, signer.dsse)
	}
}

// cancelOn is a Progress that cancels the run when what begins (the
// interrupt arriving then).
type cancelOn struct {
	what   string
	cancel context.CancelFunc
}

func (c cancelOn) Begin(what string) func() {
	if what == c.what {
		c.cancel()
	}
	return func() {}
}

func (cancelOn) Fetch(egress.Event) {}
