package main

import (
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
)

// fakeClock advances by step on every reading.
type fakeClock struct {
	mu   sync.Mutex
	t    time.Time
	step time.Duration
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(c.step)
	return c.t
}

func TestTermProgressBegin(t *testing.T) {
	var buf lockedBuf
	clock := &fakeClock{t: time.Unix(0, 0), step: 100 * time.Millisecond}
	p := &termProgress{w: &buf, now: clock.now, tick: 10 * time.Millisecond}

	// Quick work prints nothing.
	p.Begin("importing image quick.tar")()
	if buf.String() != "" {
		t.Fatalf("quick work printed %q", buf.String())
	}

	end := p.Begin("importing image big.tar")
	time.Sleep(progressDelay + 100*time.Millisecond)
	end()
	out := buf.String()
	if !strings.HasPrefix(out, "\r\033[Kimporting image big.tar … ") {
		t.Errorf("no live line: %q", out)
	}
	if !strings.HasSuffix(out, "s\n") || !strings.Contains(out, "\r\033[Kimporting image big.tar: done in ") {
		t.Errorf("no final line: %q", out)
	}
	end() // a second call is harmless
}

func TestTermProgressFetch(t *testing.T) {
	var buf lockedBuf
	p := &termProgress{w: &buf, now: time.Now, tick: time.Second}
	p.Fetch(egress.Event{Step: "deps", Method: "GET", URL: "http://deps.example.org/lib.tgz", Status: 200, Size: 1536, SHA256: "ab", DurationMS: 42, Decision: egress.DecisionAllow})
	p.Fetch(egress.Event{Step: "deps", Host: "sumdb.example.org", Port: 443, Status: 200, BytesIn: 4096, DurationMS: 1500, Decision: egress.DecisionAllow})
	p.Fetch(egress.Event{Step: "deps", Method: "GET", URL: "http://evil.example.org/x", Decision: egress.DecisionDeny})
	want := "fetch [deps] GET http://deps.example.org/lib.tgz: 200, 1.5KiB in 42ms\n" +
		"fetch [deps] CONNECT sumdb.example.org:443: 200, 4KiB received in 1.5s\n" +
		"fetch [deps] GET http://evil.example.org/x: denied\n"
	if buf.String() != want {
		t.Errorf("got\n%q\nwant\n%q", buf.String(), want)
	}
}

// Progress only on a terminal, and never under --log-format json.
func TestProgressOnlyOnTerminalWithTextLogs(t *testing.T) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatalf("open a pty: %v", err)
	}
	defer ptmx.Close()
	defer tty.Close()
	r, w, _ := os.Pipe()
	defer r.Close()
	defer w.Close()
	for _, tc := range []struct {
		name   string
		errOut *os.File
		format string
		want   bool
	}{
		{"terminal", tty, "text", true},
		{"terminal, json logs", tty, "json", false},
		{"pipe", w, "text", false},
	} {
		g := &globalOptions{logFormat: tc.format, errOut: tc.errOut}
		if got := g.progress() != nil; got != tc.want {
			t.Errorf("%s: progress %v, want %v", tc.name, got, tc.want)
		}
	}
}

type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
