package egress

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func tlsUpstream(t *testing.T) (*httptest.Server, *x509.CertPool, *atomic.Int64) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello over TLS to %s", r.Host)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return srv, pool, &conns
}

func TestConnectTLSEndToEnd(t *testing.T) {
	srv, pool, _ := tlsUpstream(t)
	pt := port(t, srv)
	// The test certificate names example.com; the fake resolver maps it to
	// 127.0.0.1, which needs its own IP rule.
	tp := startProxy(t, Config{}, fmt.Sprintf("example.com:%d", pt), fmt.Sprintf("127.0.0.1:%d", pt))
	client := tp.client(pool)
	resp, err := client.Get(fmt.Sprintf("https://example.com:%d/secure", pt))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("hello over TLS to example.com:%d", pt); string(body) != want {
		t.Fatalf("body %q", body)
	}
	// The tunnel's event is recorded when it ends; make it end.
	client.Transport.(*http.Transport).CloseIdleConnections()
	ev := tp.waitEvents(t, 1)[0]
	if ev.Decision != DecisionAllow || ev.Method != "CONNECT" || ev.Scheme != "connect" || ev.Status != 200 ||
		ev.Host != "example.com" || ev.Port != pt || ev.Addr != fmt.Sprintf("127.0.0.1:%d", pt) ||
		ev.BytesIn == 0 || ev.BytesOut == 0 || ev.Rule != fmt.Sprintf("example.com:%d", pt) {
		t.Errorf("event %+v", ev)
	}
}

func TestConnectIPLiteral(t *testing.T) {
	srv, pool, _ := tlsUpstream(t)
	pt := port(t, srv)
	tp := startProxy(t, Config{}, fmt.Sprintf("127.0.0.1:%d", pt))
	resp, err := tp.client(pool).Get(srv.URL) // https://127.0.0.1:port, no SNI
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
}

// connectRaw sends CONNECT and returns the connection after a 200.
func connectRaw(t *testing.T, proxyAddr, target string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT %s: %s", target, resp.Status)
	}
	return c, br
}

func TestConnectSNIMismatchNotForwarded(t *testing.T) {
	srv, _, conns := tlsUpstream(t)
	pt := port(t, srv)
	tp := startProxy(t, Config{}, fmt.Sprintf("example.com:%d", pt), fmt.Sprintf("127.0.0.1:%d", pt))
	c, br := connectRaw(t, tp.addr, fmt.Sprintf("example.com:%d", pt))
	tc := tls.Client(&bufConn{c, br}, &tls.Config{ServerName: "other.test", InsecureSkipVerify: true})
	if err := tc.Handshake(); err == nil {
		t.Fatal("handshake with mismatched SNI succeeded")
	}
	ev := tp.waitEvents(t, 1)[0]
	if ev.Decision != DecisionDeny || !strings.Contains(ev.Reason, "other.test") || ev.Status != 0 {
		t.Errorf("event %+v", ev)
	}
	if tp.dials.count() != 0 || conns.Load() != 0 {
		t.Errorf("mismatched tunnel was forwarded: %d dials, %d upstream conns", tp.dials.count(), conns.Load())
	}
}

func TestConnectNonTLSRefused(t *testing.T) {
	srv, _, conns := tlsUpstream(t)
	pt := port(t, srv)
	tp := startProxy(t, Config{}, fmt.Sprintf("example.com:%d", pt), fmt.Sprintf("127.0.0.1:%d", pt))
	for _, first := range []string{"SSH-2.0-OpenSSH_9.2\r\n", "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", "\x16\x03\x01\x00"} {
		c, br := connectRaw(t, tp.addr, fmt.Sprintf("example.com:%d", pt))
		io.WriteString(c, first)
		if tcp, ok := c.(*net.TCPConn); ok {
			tcp.CloseWrite()
		}
		if n, _ := io.Copy(io.Discard, br); n != 0 {
			t.Errorf("%q: got %d bytes back", first, n)
		}
	}
	evs := tp.waitEvents(t, 3)
	for _, ev := range evs {
		if ev.Decision != DecisionDeny || !strings.Contains(ev.Reason, "not a TLS ClientHello") {
			t.Errorf("event %+v", ev)
		}
	}
	if tp.dials.count() != 0 || conns.Load() != 0 {
		t.Error("non-TLS tunnel was forwarded")
	}
}

func TestConnectDenied(t *testing.T) {
	srv, _, conns := tlsUpstream(t)
	pt := port(t, srv)
	tp := startProxy(t, Config{Step: "fetch"}, fmt.Sprintf("127.0.0.1:%d", pt))
	for target, want := range map[string]string{
		fmt.Sprintf("example.com:%d", pt):   "no rule matches",
		"127.0.0.1:443":                     "loopback",
		fmt.Sprintf("0x7f000001:%d", pt):    "", // odd spelling of an allowed IP: allowed by the IP rule
		fmt.Sprintf("[::1]:%d", pt):         "loopback",
		fmt.Sprintf("deps.test.:%d", pt):    "no rule matches",
		"example.com":                       "CONNECT needs host:port",
		fmt.Sprintf("example.com:%d/x", pt): "invalid port",
	} {
		c, err := net.Dial("tcp", tp.addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\n\r\n", target)
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: "CONNECT"})
		c.Close()
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		if want == "" {
			if resp.StatusCode != 200 {
				t.Errorf("%s: %s", target, resp.Status)
			}
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode < 400 || !strings.Contains(string(body), want) {
			t.Errorf("%s: %s %q", target, resp.Status, body)
		}
	}
	if conns.Load() != 0 {
		t.Error("denied CONNECT reached the upstream")
	}
}

func TestConnectHostHeaderMismatch(t *testing.T) {
	tp := startProxy(t, Config{}, "example.com")
	resp, body := rawExchange(t, tp.addr, "CONNECT example.com:443 HTTP/1.1\r\nHost: other.test:443\r\n\r\n")
	if resp.StatusCode != 400 || !strings.Contains(body, "smuggling") {
		t.Errorf("%d %q", resp.StatusCode, body)
	}
}

func TestShutdownClosesTunnels(t *testing.T) {
	// An upstream that accepts and then stays silent keeps the tunnel
	// open; Shutdown must wait for it until its context ends, then cut it.
	srv, _, _ := tlsUpstream(t)
	pt := port(t, srv)
	tp := startProxy(t, Config{}, fmt.Sprintf("example.com:%d", pt), fmt.Sprintf("127.0.0.1:%d", pt))
	c, br := connectRaw(t, tp.addr, fmt.Sprintf("example.com:%d", pt))
	tc := tls.Client(&bufConn{c, br}, &tls.Config{ServerName: "example.com", InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := tp.Shutdown(ctx); err == nil {
		t.Error("Shutdown returned nil with a tunnel still open")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Shutdown took %s", d)
	}
	if _, err := tc.Read(make([]byte, 1)); err == nil {
		t.Error("tunnel still open after Shutdown")
	}
	ev := tp.waitEvents(t, 1)[0]
	if ev.Method != "CONNECT" || ev.Decision != DecisionAllow || ev.BytesOut == 0 {
		t.Errorf("event %+v", ev)
	}
}

// bufConn reads through the bufio.Reader that parsed the CONNECT response.
type bufConn struct {
	net.Conn
	br *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.br.Read(p) }
