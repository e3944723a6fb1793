package gitlab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cleanroom-ci/cleanroom/sandbox"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
)

// A GitLab on the host's loopback (http://127.0.0.1:8080, a test
// instance, a GitLab on the runner host itself) cannot be reached from a
// helper stage through the proxy variables alone: Go's HTTP client, and
// so gitlab-runner's artifacts-uploader and cache-archiver, never use a
// proxy for a loopback address, and connect straight to 127.0.0.1:PORT
// in the stage's own namespace, where nothing listens. The relay listens
// exactly there, inside the helper stage's namespace, and sends every
// request on through the stage's egress proxy, so it is checked against
// the stage's allowlist and recorded like any other: the relay adds a
// path, not a permission.
//
// Plain HTTP is relayed request by request (the proxy records URL and
// digest); HTTPS as a CONNECT tunnel, which the proxy checks (its SNI
// included) and records by host and port.

// loopbackTargets returns the loopback addresses among the helper
// stages' rules that name one port: the only destinations the relay
// serves.
func loopbackTargets(rules []string) []netip.AddrPort {
	var out []netip.AddrPort
	for _, r := range rules {
		ap, err := netip.ParseAddrPort(r)
		if err != nil || !ap.Addr().IsLoopback() || ap.Port() == 0 {
			continue
		}
		out = append(out, ap)
	}
	return out
}

// relaySet is the listeners of one stage's relay.
type relaySet struct {
	mu      sync.Mutex
	closers []io.Closer
}

func (r *relaySet) add(c io.Closer) {
	r.mu.Lock()
	r.closers = append(r.closers, c)
	r.mu.Unlock()
}

func (r *relaySet) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for _, c := range r.closers {
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	r.closers = nil
	return errors.Join(errs...)
}

// attachRelay returns the runner.SandboxedStep.Attach function that opens
// a relay for each target.
func attachRelay(targets []netip.AddrPort) func(sandbox.Network, string) (io.Closer, error) {
	return func(nw sandbox.Network, proxy string) (io.Closer, error) {
		set := &relaySet{}
		dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			return nw.Dial(ctx, "tcp", proxy)
		}
		for _, t := range targets {
			ln, err := nw.Listen("tcp", t.String())
			if err != nil {
				set.Close()
				return nil, fmt.Errorf("relay for GitLab at %s in the stage's namespace: %w", t, err)
			}
			set.add(ln)
			plain := newConnQueue(ln.Addr())
			set.add(plain)
			srv := httpRelay(t, proxy, dial)
			set.add(srv)
			go srv.Serve(plain)
			go serveRelay(ln, t, plain, dial)
		}
		return set, nil
	}
}

// serveRelay tells TLS from plain HTTP by the first byte a client sends
// (a TLS handshake record starts with 0x16): TLS goes through a CONNECT
// tunnel, HTTP to the request relay.
func serveRelay(ln net.Listener, target netip.AddrPort, plain *connQueue, dial func(context.Context, string, string) (net.Conn, error)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			br := bufio.NewReader(c)
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			first, err := br.Peek(1)
			c.SetReadDeadline(time.Time{})
			if err != nil {
				c.Close()
				return
			}
			pc := &peekedConn{Conn: c, r: br}
			if first[0] == 0x16 {
				tunnel(pc, target, dial)
				return
			}
			if !plain.push(pc) {
				c.Close()
			}
		}()
	}
}

// tunnel relays one connection as a CONNECT tunnel to target through the
// proxy: the client's TLS goes through untouched.
func tunnel(c net.Conn, target netip.AddrPort, dial func(context.Context, string, string) (net.Conn, error)) {
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	up, err := dial(ctx, "tcp", "")
	cancel()
	if err != nil {
		return
	}
	defer up.Close()
	if err := connectThrough(up, target.String()); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); closeWrite(up); done <- struct{}{} }()
	go func() { io.Copy(c, up); closeWrite(c); done <- struct{}{} }()
	<-done
	<-done
}

// httpRelay forwards each request to http://target through the proxy,
// unchanged but for the hop-by-hop headers.
func httpRelay(target netip.AddrPort, proxy string, dial func(context.Context, string, string) (net.Conn, error)) *http.Server {
	proxyURL := &url.URL{Scheme: "http", Host: proxy}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme = "http"
			r.Out.URL.Host = target.String()
			r.Out.Host = r.In.Host
		},
		Transport: &http.Transport{
			Proxy:               http.ProxyURL(proxyURL),
			DialContext:         dial,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     30 * time.Second,
		},
		FlushInterval: -1,
	}
	return &http.Server{Handler: rp, ReadHeaderTimeout: 30 * time.Second}
}

// peekedConn is a connection whose first bytes were read into r.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func (c *peekedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// connQueue is a net.Listener fed by serveRelay.
type connQueue struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (q *connQueue) push(c net.Conn) bool {
	select {
	case q.conns <- c:
		return true
	case <-q.closed:
		return false
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.conns:
		return c, nil
	case <-q.closed:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.closed) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }

// connectThrough asks the proxy on conn for a tunnel to hostport.
func connectThrough(conn net.Conn, hostport string) error {
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	defer conn.SetDeadline(time.Time{})
	if _, err := fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", hostport, hostport); err != nil {
		return err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the proxy refused the tunnel to %s: %s", hostport, resp.Status)
	}
	if br.Buffered() > 0 {
		return errors.New("the proxy sent data before the tunnel opened")
	}
	return nil
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// loopbackRule turns a loopback name into the address rule the proxy
// needs: names never grant a loopback address, so "localhost" is
// allowed as 127.0.0.1 (what /etc/hosts maps it to).
func loopbackRule(host string, port string) (string, bool) {
	if !strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return "", false
	}
	if _, err := strconv.Atoi(port); err != nil {
		return "", false
	}
	r, err := egress.ParseRule(net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		return "", false
	}
	return r.String(), true
}
