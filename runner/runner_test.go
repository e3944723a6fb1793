package runner

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/cleanroom-ci/cleanroom/sandbox"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
)

func TestPrefixWriterWritesWholeLines(t *testing.T) {
	var out bytes.Buffer
	w := newPrefixWriter(&out, "[s] ")
	w.Write([]byte("one\ntw"))
	w.Write([]byte("o\nthree"))
	if got := out.String(); got != "[s] one\n[s] two\n" {
		t.Fatalf("before flush: %q", got)
	}
	w.Flush()
	if got := out.String(); got != "[s] one\n[s] two\n[s] three\n" {
		t.Fatalf("after flush: %q", got)
	}
	// A line without newline longer than the bound is emitted, not held.
	out.Reset()
	w.Write(bytes.Repeat([]byte("x"), maxLine+1))
	if out.Len() == 0 {
		t.Fatal("an over-long line was held back")
	}
}

func TestStepEnvProxiesWinAndNothingLeaks(t *testing.T) {
	t.Setenv("RUNNER_SECRET", "s3cret")
	env := stepEnv([]string{"FOO=bar", "HOME=/custom"}, 4242)
	want := []string{
		"CI=true", "FOO=bar", "GOPROXY=http://127.0.0.1:4242/gomod/",
		"HOME=/custom", "HTTPS_PROXY=http://127.0.0.1:4242", "HTTP_PROXY=http://127.0.0.1:4242",
		"NO_PROXY=", "http_proxy=http://127.0.0.1:4242", "https_proxy=http://127.0.0.1:4242", "no_proxy=",
	}
	if !slices.Equal(env, want) {
		t.Fatalf("env\n got %q\nwant %q", env, want)
	}
	for _, kv := range env {
		if strings.Contains(kv, "s3cret") {
			t.Fatal("runner environment leaked")
		}
	}
}

func TestDependenciesFromEvents(t *testing.T) {
	deps := Dependencies([]egress.Event{
		{Step: "a", Method: "GET", URL: "http://x.test/f", Status: 200, SHA256: strings.Repeat("a", 64), Size: 3, Decision: egress.DecisionAllow},
		{Step: "a", Method: "GET", URL: "http://x.test/missing", Status: 404, Decision: egress.DecisionAllow},
		{Step: "a", Method: "CONNECT", Host: "y.test", Port: 443, Status: 200, BytesIn: 10, Decision: egress.DecisionAllow},
		{Step: "a", Method: "CONNECT", Host: "z.test", Port: 443, Status: 502, Decision: egress.DecisionAllow},
		{Step: "a", Method: "GET", URL: "http://denied.test/", Status: 403, Decision: egress.DecisionDeny},
	})
	if len(deps) != 2 || deps[0].URL != "http://x.test/f" || deps[1].URL != "y.test:443" || deps[1].SHA256 != "" {
		t.Fatalf("deps %+v", deps)
	}
}

func TestMaskOutDirOnlyInsideWorkspace(t *testing.T) {
	ws := t.TempDir()
	stage := t.TempDir()
	reused := &runWorkspace{Dir: ws, Mode: WorkspaceReused}
	m := maskOutDir(Config{Workspace: ws, OutDir: filepath.Join(ws, ".cleanroom"), ws: reused}, stage)
	if len(m) != 1 || m[0].Destination != "/workspace/.cleanroom" || !m[0].ReadOnly {
		t.Fatalf("mask %+v", m)
	}
	if fi, err := os.Stat(m[0].Source); err != nil || !fi.IsDir() {
		t.Fatalf("mask source: %v", err)
	}
	if m := maskOutDir(Config{Workspace: ws, OutDir: t.TempDir(), ws: reused}, stage); m != nil {
		t.Fatalf("out dir outside the workspace masked: %+v", m)
	}
}

func TestPublishIsAtomicAndReplacesOldLogs(t *testing.T) {
	stage, out := t.TempDir(), t.TempDir()
	os.MkdirAll(filepath.Join(stage, "logs"), 0o755)
	os.MkdirAll(filepath.Join(out, "logs"), 0o755)
	os.WriteFile(filepath.Join(out, "logs", "old-step.log"), []byte("old"), 0o644)
	os.WriteFile(filepath.Join(stage, "logs", "new.log"), []byte("new"), 0o644)
	os.WriteFile(filepath.Join(stage, "summary.json"), []byte("{}"), 0o644)
	if err := publish(Config{Workspace: t.TempDir(), OutDir: out}, stage); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out, "logs", "old-step.log")); err == nil {
		t.Fatal("a log of an earlier run survived")
	}
	b, err := os.ReadFile(filepath.Join(out, "logs", "new.log"))
	if err != nil || string(b) != "new" {
		t.Fatalf("new.log: %q %v", b, err)
	}
	ents, _ := os.ReadDir(out)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp") {
			t.Fatalf("temporary file left: %s", e.Name())
		}
	}
}

func TestPublishRefusesSymlinks(t *testing.T) {
	stage, ws, host := t.TempDir(), t.TempDir(), t.TempDir()
	os.MkdirAll(filepath.Join(stage, "logs"), 0o755)
	os.WriteFile(filepath.Join(stage, "logs", "s.log"), []byte("new"), 0o644)
	os.WriteFile(filepath.Join(host, "keep"), nil, 0o644)
	// The default output directory is a symlink to a host directory.
	os.Symlink(host, filepath.Join(ws, ".cleanroom"))
	cfg := Config{Workspace: ws, OutDir: filepath.Join(ws, ".cleanroom")}
	if err := publish(cfg, stage); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("published through a symlinked output directory: %v", err)
	}
	// logs inside a real output directory is a symlink.
	os.Remove(filepath.Join(ws, ".cleanroom"))
	os.Mkdir(filepath.Join(ws, ".cleanroom"), 0o755)
	os.Symlink(host, filepath.Join(ws, ".cleanroom", "summary.json"))
	os.WriteFile(filepath.Join(stage, "summary.json"), []byte("{}"), 0o644)
	if err := publish(cfg, stage); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(filepath.Join(ws, ".cleanroom", "summary.json")); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("summary.json: %v %v", fi, err)
	}
	if ents, _ := os.ReadDir(host); len(ents) != 1 {
		t.Fatalf("host directory changed: %v", ents)
	}
}

func TestSplitTarget(t *testing.T) {
	if h, p := splitTarget("example.org:443"); h != "example.org" || p != 443 {
		t.Fatal(h, p)
	}
	if h, p := splitTarget("[::1]:80"); h != "::1" || p != 80 {
		t.Fatal(h, p)
	}
	if h, p := splitTarget(""); h != "" || p != 0 {
		t.Fatal(h, p)
	}
}

func TestMaskWriterMasksAcrossWrites(t *testing.T) {
	var out bytes.Buffer
	m := newMaskWriter(&out, map[string]string{"A": "hunter22", "B": "xy"})
	m.Write([]byte("token=hun"))
	m.Write([]byte("ter22 and xy\nnext hunter22"))
	m.Flush()
	if got := out.String(); got != "token=[masked] and xy\nnext [masked]" {
		t.Fatalf("masked output %q", got)
	}
}

func TestStripSetIDClearsBits(t *testing.T) {
	ws := t.TempDir()
	f := filepath.Join(ws, "suid")
	os.WriteFile(f, []byte("x"), 0o755)
	os.Chmod(f, 0o755|os.ModeSetuid|os.ModeSetgid)
	if err := stripSetID(ws, hclog.NewNullLogger()); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(f)
	if fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 || fi.Mode().Perm() != 0o755 {
		t.Fatalf("mode %v", fi.Mode())
	}
}

func TestCapWriterTruncatesWithMarker(t *testing.T) {
	var out bytes.Buffer
	c := newCapWriter(&out, 10)
	c.Write([]byte("0123456"))
	c.Write([]byte("789abc"))
	c.Write([]byte("more"))
	if !strings.HasPrefix(out.String(), "0123456789\n[cleanroom: output truncated") || c.dropped != 7 {
		t.Fatalf("capped output %q, dropped %d", out.String(), c.dropped)
	}
}

// A write that fills the cap exactly is kept whole; the marker comes with
// the first byte dropped after it.
func TestCapWriterMarksTruncationAfterAnExactFill(t *testing.T) {
	var out bytes.Buffer
	c := newCapWriter(&out, 8)
	c.Write([]byte("0123"))
	c.Write([]byte("4567"))
	if out.String() != "01234567" || c.dropped != 0 {
		t.Fatalf("output %q, dropped %d before the cap was passed", out.String(), c.dropped)
	}
	c.Write([]byte("89"))
	c.Write([]byte("ab"))
	if strings.Count(out.String(), "output truncated") != 1 || !strings.HasPrefix(out.String(), "01234567\n[cleanroom: output truncated") || c.dropped != 4 {
		t.Fatalf("capped output %q, dropped %d", out.String(), c.dropped)
	}
}

type countingRecorder struct{ events []egress.Event }

func (c *countingRecorder) Record(e egress.Event) { c.events = append(c.events, e) }

type countingLog struct{ n int }

func (c *countingLog) Warn(string, ...any) { c.n++ }

func TestStepRecorderSummarisesDenialsPastTheCap(t *testing.T) {
	next, log := &countingRecorder{}, &countingLog{}
	r := newStepRecorder(next, log, "s")
	for i := range deniedEventLimit + summaryHostLimit + 50 {
		r.Record(egress.Event{Step: "s", Host: fmt.Sprintf("h%d.test", i), Port: 80, Decision: egress.DecisionDeny})
	}
	r.Record(egress.Event{Step: "s", Host: "ok.test", Decision: egress.DecisionAllow})
	r.flush()
	// One by one up to the cap, the allowed one, then one per counted host
	// and one for the rest.
	if want := deniedEventLimit + 1 + summaryHostLimit + 1; len(next.events) != want {
		t.Fatalf("%d events recorded, want %d", len(next.events), want)
	}
	if last := next.events[len(next.events)-1]; last.Host != otherHosts && !strings.Contains(last.Reason, "summarised") {
		t.Fatalf("last event %+v", last)
	}
	if log.n != warnLimit+1 {
		t.Fatalf("%d warnings, want %d", log.n, warnLimit+1)
	}
}

func TestMaskerCatchesEncodings(t *testing.T) {
	secret := "S3cr3tValue42xyz"
	m := newMasker(map[string]string{"S": secret})
	forms := []string{secret, strings.ToLower(secret), hex.EncodeToString([]byte(secret)), strings.ToUpper(hex.EncodeToString([]byte(secret))), url.QueryEscape(secret)}
	for k := 0; k < 3; k++ {
		prefix := strings.Repeat("p", k)
		forms = append(forms, base64.StdEncoding.EncodeToString([]byte(prefix+secret+"tail")), base64.URLEncoding.EncodeToString([]byte(prefix+secret)))
	}
	for _, f := range forms {
		got := m.String("before " + f + " after")
		if strings.Contains(got, f) || !strings.Contains(got, "[masked]") {
			t.Errorf("form %q not masked: %q", f, got)
		}
	}
	if got := m.String("ordinary output line"); got != "ordinary output line" {
		t.Fatalf("ordinary text changed: %q", got)
	}
}

// TestSandboxedClearsSetIDInEveryWritableMount: a step's setuid file is
// cleared in every read-write mount it had (a GitLab helper's cache
// directory as well as the workspace), and a read-only mount's files, the
// host's own, are left as they are.
func TestSandboxedClearsSetIDInEveryWritableMount(t *testing.T) {
	ws, cache, tools := t.TempDir(), t.TempDir(), t.TempDir()
	for _, d := range []string{ws, cache, tools} {
		f := filepath.Join(d, "planted")
		os.WriteFile(f, []byte("x"), 0o755)
		os.Chmod(f, 0o755|os.ModeSetuid|os.ModeSetgid)
	}
	fe := &fakeExecutor{}
	sr, err := Sandboxed(context.Background(), SandboxEnv{Executor: fe, StateDir: t.TempDir(), Logger: hclog.NewNullLogger()}, SandboxedStep{
		Name: "helper", ID: "cr-test-0-helper", Args: []string{"/bin/sh", "-c", "true"}, Workspace: ws,
		Mounts: []sandbox.Mount{{Source: cache, Destination: "/cache"}, {Source: tools, Destination: "/tools", ReadOnly: true}},
		Output: io.Discard,
	})
	if err != nil || sr.Status != "ok" {
		t.Fatalf("step: %v %+v", err, sr)
	}
	for d, want := range map[string]bool{ws: false, cache: false, tools: true} {
		fi, _ := os.Stat(filepath.Join(d, "planted"))
		if got := fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0; got != want {
			t.Errorf("%s: set-id bits present = %v, want %v (mode %v)", d, got, want, fi.Mode())
		}
	}
}
