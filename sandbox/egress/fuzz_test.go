package egress

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

func FuzzParseRule(f *testing.F) {
	for _, s := range []string{"example.com", "*.example.com:8443", "[::1]:80", "10.0.0.0/8:443", "[fd00::/8]:443", "bücher.example", "127.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRule(s)
		if err != nil {
			if !strings.Contains(err.Error(), "accepted forms") {
				t.Fatalf("error without accepted forms: %v", err)
			}
			return
		}
		c := r.String()
		r2, err := ParseRule(c)
		if err != nil {
			t.Fatalf("canonical form %q of %q does not parse: %v", c, s, err)
		}
		if r2 != r || r2.String() != c {
			t.Fatalf("%q: canonical %q parses to %q", s, c, r2.String())
		}
	})
}

func FuzzNormalizeHost(f *testing.F) {
	for _, s := range []string{"example.com", "2130706433", "0x7f000001", "0177.0.0.1", "127.1", "[::ffff:127.0.0.1]", "bücher.example.", "１２７.０.０.１"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		host, ip, isIP, err := NormalizeHost(s)
		if err != nil {
			return
		}
		if isIP {
			if !ip.IsValid() || ip.String() != host || ip.Zone() != "" || ip.Is4In6() {
				t.Fatalf("%q: bad IP result %q %v", s, host, ip)
			}
			_ = Classify(ip)
		} else if err := checkName(host); err != nil {
			t.Fatalf("%q: name %q fails checkName: %v", s, host, err)
		}
		// Normalising is idempotent: the canonical form means the same.
		h2, ip2, isIP2, err := NormalizeHost(host)
		if isIP && ip.Is6() {
			h2, ip2, isIP2, err = NormalizeHost("[" + host + "]")
		}
		if err != nil || h2 != host || ip2 != ip || isIP2 != isIP {
			t.Fatalf("%q -> %q -> %q, %v (%v)", s, host, h2, ip2, err)
		}
	})
}

func FuzzParseClientHello(f *testing.F) {
	f.Add(buildHello(sniExt("example.com")))
	f.Add(buildHello(sniExt("a.example"), ext(0xfe0d, []byte{1})))
	f.Add([]byte{0x16, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		raw, ch, err := readClientHello(bytes.NewReader(data))
		if len(raw) > len(data) || !bytes.Equal(raw, data[:len(raw)]) {
			t.Fatal("raw is not a prefix of the input")
		}
		if err == nil {
			if ch.hasSNI && ch.serverName == "" {
				t.Fatal("empty server name accepted")
			}
		} else if !errors.Is(err, errNotTLS) {
			t.Fatalf("error %v does not wrap errNotTLS", err)
		}
	})
}

// memConn is an in-memory connection: reads come from a fixed input, then
// EOF; writes are collected. Deadlines are accepted and ignored (the input
// always ends, so nothing can block).
type memConn struct {
	r      io.Reader
	mu     sync.Mutex
	out    bytes.Buffer
	local  net.Addr
	closed bool
}

func (c *memConn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c *memConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.out.Write(p)
}
func (c *memConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return nil
}
func (c *memConn) LocalAddr() net.Addr              { return c.local }
func (c *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

const cannedUpstream = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"

// cannedConn is an upstream that answers cannedUpstream once something has
// been written to it (a real server does not answer before the request).
type cannedConn struct {
	memConn
	once  sync.Once
	wrote chan struct{}
	shut  chan struct{}
	sOnce sync.Once
}

func newCannedUpstream() *cannedConn {
	c := &cannedConn{wrote: make(chan struct{}), shut: make(chan struct{})}
	c.r = strings.NewReader(cannedUpstream)
	c.local = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	return c
}

func (c *cannedConn) Write(p []byte) (int, error) {
	n, err := c.memConn.Write(p)
	c.once.Do(func() { close(c.wrote) })
	return n, err
}

func (c *cannedConn) Read(p []byte) (int, error) {
	// Once the request was written, the canned response is there to read
	// even if the tunnel already half-closed us: a select over both
	// channels would pick one at random and make the harness flaky.
	select {
	case <-c.wrote:
		return c.memConn.Read(p)
	default:
	}
	select {
	case <-c.wrote:
		return c.memConn.Read(p)
	case <-c.shut:
		return 0, io.EOF
	}
}

func (c *cannedConn) Close() error {
	c.sOnce.Do(func() { close(c.shut) })
	return c.memConn.Close()
}

// fuzzProxy is a proxy whose every connection is in memory: allowed
// requests reach a canned upstream, nothing touches the network.
func fuzzProxy(t testing.TB) *Proxy {
	pol, err := NewPolicy([]string{"deps.test", "*.mirror.test:8443", "mirror.test", "127.0.0.1", "example.com"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{
		Step:           "fuzz",
		Policy:         pol,
		GoModUpstream:  mustURL("http://mirror.test/base/"),
		HeaderTimeout:  time.Second,
		IdleTimeout:    time.Second,
		MaxHeaderBytes: 4096,
		Resolve: fakeResolver(map[string][]netip.Addr{
			"deps.test": {loopback4}, "mirror.test": {loopback4}, "a.mirror.test": {loopback4}, "example.com": {loopback4},
		}),
		Dial: func(ctx context.Context, network string, ap netip.AddrPort) (net.Conn, error) {
			if !ap.Addr().IsLoopback() {
				return nil, fmt.Errorf("fuzz: refusing to dial %s", ap)
			}
			return newCannedUpstream(), nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// serveBytes runs one client connection carrying data through p.
func serveBytes(t testing.TB, p *Proxy, data []byte) []byte {
	var panicked any
	p.onPanic = func(r any) { panicked = r }
	c := &memConn{r: bytes.NewReader(data), local: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}}
	p.slots <- struct{}{} // as Serve's admit: untrack releases the slot
	p.active.Add(1)
	cc := p.track(c)
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.serveConn(cc)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("proxy hung on input %q", data)
	}
	if panicked != nil {
		t.Fatalf("panic on input %q: %v", data, panicked)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Bytes()
}

func FuzzProxyRequest(f *testing.F) {
	for _, s := range []string{
		"GET http://deps.test/x HTTP/1.1\r\nHost: deps.test\r\n\r\n",
		"POST http://deps.test/x HTTP/1.1\r\nHost: deps.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"GET http://evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n",
		"GET /gomod/example.test/dep/@v/v1.0.0.zip HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
		"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n" + string(buildHello(sniExt("example.com"))),
	} {
		f.Add([]byte(s))
	}
	p := fuzzProxy(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		out := serveBytes(t, p, data)
		if len(out) > 0 && !bytes.HasPrefix(out, []byte("HTTP/1.1 ")) {
			t.Fatalf("response does not start with a status line: %q", out)
		}
	})
}

func TestFuzzProxyHarness(t *testing.T) {
	// The harness itself works: an allowed request reaches the canned
	// upstream, a CONNECT with a matching ClientHello is spliced.
	p := fuzzProxy(t)
	out := serveBytes(t, p, []byte("GET http://deps.test/x HTTP/1.1\r\nHost: deps.test\r\n\r\n"))
	if !bytes.HasSuffix(out, []byte("hello")) {
		t.Errorf("forward: %q", out)
	}
	out = serveBytes(t, p, append([]byte("CONNECT example.com:443 HTTP/1.1\r\n\r\n"), buildHello(sniExt("example.com"))...))
	if !bytes.Contains(out, []byte("200 Connection established")) || !bytes.HasSuffix(out, []byte("hello")) {
		t.Errorf("connect: %q", out)
	}
	out = serveBytes(t, p, []byte("GET /gomod/example.test/dep/@v/v1.0.0.zip HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"))
	if !bytes.HasSuffix(out, []byte("hello")) {
		t.Errorf("gomod: %q", out)
	}
}
