package egress

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// blockingUpstream answers /hold only when release is closed, so the
// connections asking for it stay active (not idle) at the proxy.
func blockingUpstream(t *testing.T) (srv *countingServer, release func()) {
	ch := make(chan struct{})
	var once sync.Once
	srv = newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			select {
			case <-ch:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "ok")
	})
	release = func() { once.Do(func() { close(ch) }) }
	t.Cleanup(release)
	return srv, release
}

// holdActive opens n connections that each have a request for /hold in
// flight, and waits until the proxy serves all of them.
func holdActive(t *testing.T, tp *testProxy, pt, n int) []net.Conn {
	var held []net.Conn
	for range n {
		c, err := net.Dial("tcp", tp.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "GET http://deps.test:%d/hold HTTP/1.1\r\nHost: deps.test:%d\r\n\r\n", pt, pt)
		held = append(held, c)
	}
	deadline := time.Now().Add(5 * time.Second)
	for tp.active.Load() < int64(n) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if tp.active.Load() != int64(n) {
		t.Fatalf("%d connections active, want %d", tp.active.Load(), n)
	}
	return held
}

// fetchVia sends one GET through the proxy on a fresh connection and
// returns the status and body.
func fetchVia(t *testing.T, tp *testProxy, pt int, path string) (int, string) {
	c, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(c, "GET http://deps.test:%d%s HTTP/1.1\r\nHost: deps.test:%d\r\nConnection: close\r\n\r\n", pt, path, pt)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// Beyond MaxConns a connection waits for a slot and is then served: a
// burst of parallel downloads is slowed down, not failed.
func TestBackPressureWaitsForSlot(t *testing.T) {
	up, release := blockingUpstream(t)
	pt := port(t, up.Server)
	tp := startProxy(t, Config{MaxConns: 2, QueueWait: 10 * time.Second}, fmt.Sprintf("deps.test:%d", pt), fmt.Sprintf("127.0.0.1:%d", pt))
	holdActive(t, tp, pt, 2)

	type result struct {
		status int
		body   string
	}
	got := make(chan result, 1)
	go func() {
		s, b := fetchVia(t, tp, pt, "/now")
		got <- result{s, b}
	}()
	select {
	case r := <-got:
		t.Fatalf("served while every slot was busy: %d %q", r.status, r.body)
	case <-time.After(300 * time.Millisecond):
	}
	if tp.waiting.Load() != 1 {
		t.Errorf("waiting = %d, want 1", tp.waiting.Load())
	}
	release() // the held requests finish; their connections go idle and are evicted or closed
	select {
	case r := <-got:
		if r.status != 200 || r.body != "ok" {
			t.Errorf("queued connection got %d %q, want 200 ok", r.status, r.body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("queued connection never served")
	}
}

// Idle keep-alive connections give up their slots to waiting ones.
func TestBackPressureEvictsIdle(t *testing.T) {
	up := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	pt := port(t, up.Server)
	tp := startProxy(t, Config{MaxConns: 1, QueueWait: 10 * time.Second}, fmt.Sprintf("deps.test:%d", pt), fmt.Sprintf("127.0.0.1:%d", pt))
	idle, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	fmt.Fprintf(idle, "GET http://deps.test:%d/ HTTP/1.1\r\nHost: deps.test:%d\r\n\r\n", pt, pt)
	br := bufio.NewReader(idle)
	idle.SetDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body) // now idle on keep-alive, holding the only slot

	if s, b := fetchVia(t, tp, pt, "/"); s != 200 || b != "ok" {
		t.Errorf("second connection got %d %q, want 200 ok", s, b)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Error("the idle keep-alive connection was not closed to make room")
	}
}

// Past QueueWait, a waiting connection gets a clear 503.
func TestBackPressureRefusesAfterWait(t *testing.T) {
	up, release := blockingUpstream(t)
	defer release() // before the proxy's shutdown, which waits for requests in flight
	pt := port(t, up.Server)
	tp := startProxy(t, Config{MaxConns: 2, QueueWait: 300 * time.Millisecond}, fmt.Sprintf("deps.test:%d", pt), fmt.Sprintf("127.0.0.1:%d", pt))
	holdActive(t, tp, pt, 2)
	start := time.Now()
	s, body := fetchVia(t, tp, pt, "/now")
	if s != 503 || !strings.Contains(body, "limit of 2 concurrent connections, none became free within 300ms") {
		t.Errorf("%d %q", s, body)
	}
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Errorf("refused after %s, before QueueWait", waited)
	}
}

// A connection that finds the queue full is refused at once.
func TestBackPressureRefusesWhenQueueFull(t *testing.T) {
	up, release := blockingUpstream(t)
	pt := port(t, up.Server)
	tp := startProxy(t, Config{MaxConns: 1, QueueConns: 1, QueueWait: 10 * time.Second}, fmt.Sprintf("deps.test:%d", pt), fmt.Sprintf("127.0.0.1:%d", pt))
	holdActive(t, tp, pt, 1)
	queued := make(chan int, 1)
	go func() {
		s, _ := fetchVia(t, tp, pt, "/now")
		queued <- s
	}()
	deadline := time.Now().Add(5 * time.Second)
	for tp.waiting.Load() < 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	s, body := fetchVia(t, tp, pt, "/now")
	if s != 503 || !strings.Contains(body, "limit of 1 concurrent connections, and 1 more are already waiting") {
		t.Errorf("%d %q", s, body)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("refusal took %s; a full queue must refuse at once", d)
	}
	release()
	if s := <-queued; s != 200 {
		t.Errorf("queued connection got %d, want 200", s)
	}
}

func TestSlowlorisClosed(t *testing.T) {
	tp := startProxy(t, Config{HeaderTimeout: 300 * time.Millisecond})
	c, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	req := "GET http://deps.test/ HTTP/1.1\r\nHost: deps.test\r\nX-Slow: " + strings.Repeat("a", 100)
	closed := make(chan time.Duration, 1)
	go func() {
		io.Copy(io.Discard, c)
		closed <- time.Since(start)
	}()
	for i := 0; i < len(req); i++ {
		if _, err := c.Write([]byte{req[i]}); err != nil {
			break
		}
		select {
		case d := <-closed:
			if d > 2*time.Second {
				t.Errorf("slow client closed only after %s", d)
			}
			ev := tp.waitEvents(t, 1)[0]
			if ev.Status != http.StatusRequestTimeout || ev.Decision != DecisionDeny {
				t.Errorf("event %+v", ev)
			}
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatal("slow client was never cut off")
}

func TestIdleKeepAliveClosed(t *testing.T) {
	tp := startProxy(t, Config{IdleTimeout: 200 * time.Millisecond})
	c, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	if n, _ := io.Copy(io.Discard, c); n != 0 || time.Since(start) > 3*time.Second {
		t.Errorf("idle connection: %d bytes, closed after %s", n, time.Since(start))
	}
}

func TestHeaderTooLarge(t *testing.T) {
	tp := startProxy(t, Config{MaxHeaderBytes: 4096})
	resp, body := rawExchange(t, tp.addr, "GET http://deps.test/ HTTP/1.1\r\nHost: deps.test\r\nX-Big: "+strings.Repeat("a", 8000)+"\r\n\r\n")
	if resp.StatusCode != 431 {
		t.Errorf("%d %q", resp.StatusCode, body)
	}
}

func TestGarbageInput(t *testing.T) {
	tp := startProxy(t, Config{HeaderTimeout: 300 * time.Millisecond})
	rng := rand.New(rand.NewPCG(1, 2))
	inputs := []string{
		"\x00\x01\x02\x03",
		"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
		"GET\r\n\r\n",
		"GET  http://deps.test/ HTTP/1.1\r\n\r\n",
		"GET http://deps.test/ HTTP/9.9\r\n\r\n",
		"GET http://deps.test/ HTTP/1.1\r\nHost: deps.test\r\nContent-Length: -1\r\n\r\n",
		"GET http://deps.test/ HTTP/1.1\r\nHost: deps.test\r\nContent-Length: 99999999999999999999\r\n\r\n",
		"GET http://deps.test/ HTTP/1.1\r\nHost: deps\x00.test\r\n\r\n",
		"GET http://de\x7fps.test/ HTTP/1.1\r\nHost: deps.test\r\n\r\n",
		"\r\n\r\n",
	}
	for range 20 {
		b := make([]byte, rng.IntN(2000)+1)
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		inputs = append(inputs, string(b)+"\r\n\r\n")
	}
	for _, in := range inputs {
		c, err := net.Dial("tcp", tp.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, in)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil && resp.StatusCode < 400 {
			t.Errorf("%q: %s", in, resp.Status)
		}
		c.Close()
	}
	// The proxy is still serving.
	if resp, _ := rawExchange(t, tp.addr, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 400 {
		t.Errorf("proxy broken after garbage: %s", resp.Status)
	}
	if tp.dials.count() != 0 {
		t.Error("garbage caused a dial")
	}
}

func TestAuditMode(t *testing.T) {
	up := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	pt := port(t, up.Server)
	// Only the IP rule: the name would be denied in enforce mode.
	tp := startProxy(t, Config{Mode: Audit}, fmt.Sprintf("127.0.0.1:%d", pt))
	resp, body := rawExchange(t, tp.addr, fmt.Sprintf("GET http://deps.test:%d/ HTTP/1.1\r\nHost: deps.test:%d\r\n\r\n", pt, pt))
	if resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	// A name resolving to loopback without an IP rule stays denied.
	resp, body = rawExchange(t, tp.addr, "GET http://deps.test/ HTTP/1.1\r\nHost: deps.test\r\n\r\n")
	if resp.StatusCode != 403 || !strings.Contains(body, "loopback") {
		t.Errorf("special in audit: %d %q", resp.StatusCode, body)
	}
	// So do smuggling attempts.
	resp, _ = rawExchange(t, tp.addr, fmt.Sprintf("GET http://deps.test:%d/ HTTP/1.1\r\nHost: other.test\r\n\r\n", pt))
	if resp.StatusCode != 400 {
		t.Errorf("smuggling in audit: %d", resp.StatusCode)
	}
	evs := byConn(tp.waitEvents(t, 3))
	if evs[0].Decision != DecisionAuditAllow || evs[0].Rule != "" || evs[0].Status != 200 || evs[0].SHA256 == "" {
		t.Errorf("audit event %+v", evs[0])
	}
	if evs[1].Decision != DecisionDeny {
		t.Errorf("special event %+v", evs[1])
	}
	if got := tp.WouldNeed(); len(got) != 1 || got[0] != fmt.Sprintf("deps.test:%d", pt) {
		t.Errorf("WouldNeed = %v", got)
	}
	if up.count() != 1 {
		t.Errorf("upstream saw %d requests", up.count())
	}
}

func TestServeAfterShutdown(t *testing.T) {
	p, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	if err := p.Serve(l); err != nil {
		t.Errorf("Serve after Close = %v", err)
	}
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []Config{
		{Mode: Mode(7)},
		{GoModUpstream: mustURL("ftp://mirror.test/")},
		{GoModUpstream: mustURL("http://mirror.test/?x=1")},
		{SumDBUpstream: mustURL("http://sum.example.test/")},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	if m, err := ParseMode("Audit"); err != nil || m != Audit || m.String() != "audit" {
		t.Error("ParseMode")
	}
	if _, err := ParseMode("log"); err == nil {
		t.Error("ParseMode accepted junk")
	}
}

// A connection that has not sent its first request yet keeps its slot:
// closing it would fail a client that never reused it (no retry applies).
func TestBackPressureSparesNewConnections(t *testing.T) {
	up := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	pt := port(t, up.Server)
	tp := startProxy(t, Config{MaxConns: 1, QueueWait: time.Second}, fmt.Sprintf("deps.test:%d", pt), fmt.Sprintf("127.0.0.1:%d", pt))
	fresh, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	deadline := time.Now().Add(5 * time.Second)
	for tp.active.Load() < 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if s, body := fetchVia(t, tp, pt, "/"); s != 503 || !strings.Contains(body, "none became free within 1s") {
		t.Errorf("queued connection: %d %q, want 503 after the wait", s, body)
	}
	fresh.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(fresh, "GET http://deps.test:%d/ HTTP/1.1\r\nHost: deps.test:%d\r\nConnection: close\r\n\r\n", pt, pt)
	resp, err := http.ReadResponse(bufio.NewReader(fresh), nil)
	if err != nil {
		t.Fatalf("the new connection was closed to make room: %v", err)
	}
	if body, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(body) != "ok" {
		t.Errorf("new connection got %d %q", resp.StatusCode, body)
	}
}
