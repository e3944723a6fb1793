package egress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	stateIdle int32 = iota
	stateActive
	stateClosed
)

// clientConn is one connection from the step. Its state lets Shutdown
// close idle keep-alive connections without cutting a request in flight;
// closers are upstream connections (tunnels) to close along with it.
type clientConn struct {
	id     uint64
	conn   net.Conn
	state  atomic.Int32
	idleAt atomic.Int64 // UnixNano when it last became idle
	served atomic.Int64 // requests answered on it
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	closers map[io.Closer]struct{}
	closed  bool
}

func newClientConn(id uint64, c net.Conn) *clientConn {
	ctx, cancel := context.WithCancel(context.Background())
	cc := &clientConn{id: id, conn: c, ctx: ctx, cancel: cancel, closers: map[io.Closer]struct{}{}}
	cc.idleAt.Store(time.Now().UnixNano())
	return cc
}

func (c *clientConn) setIdle() bool {
	c.idleAt.Store(time.Now().UnixNano())
	return c.state.CompareAndSwap(stateActive, stateIdle) || c.state.Load() == stateIdle
}

// idleFor is how long an idle keep-alive connection has been idle: 0 if
// it is active or has not answered a request yet. A new connection's first
// request may simply be slow to arrive, and a client retries a request on
// a reused connection that the server closed, but not on a new one.
func (c *clientConn) idleFor() time.Duration {
	if c.state.Load() != stateIdle || c.served.Load() == 0 {
		return 0
	}
	return time.Since(time.Unix(0, c.idleAt.Load()))
}
func (c *clientConn) setActive() bool { return c.state.CompareAndSwap(stateIdle, stateActive) }

func (c *clientConn) closeIfIdle() {
	if c.state.CompareAndSwap(stateIdle, stateClosed) {
		c.conn.Close()
	}
}

// addCloser ties x's lifetime to the connection; it reports false (and
// the caller must close x) if the connection is already closed.
func (c *clientConn) addCloser(x io.Closer) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.closers[x] = struct{}{}
	return true
}

func (c *clientConn) forceClose() {
	c.state.Store(stateClosed)
	c.cancel()
	c.conn.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for x := range c.closers {
		x.Close()
	}
	clear(c.closers)
}

// serveConn runs the HTTP/1.x loop of one client connection. Panics are
// contained here: a bug triggered by one request must cost that connection,
// never the runner.
func (p *Proxy) serveConn(cc *clientConn) {
	defer p.untrack(cc)
	defer cc.forceClose()
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("panic serving connection", "conn", cc.id, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			if p.onPanic != nil {
				p.onPanic(r)
			}
		}
	}()
	br := bufio.NewReaderSize(cc.conn, p.cfg.MaxHeaderBytes)
	bw := bufio.NewWriterSize(deadlineWriter{cc.conn, p.cfg.IdleTimeout}, 4<<10)
	for {
		if !cc.setIdle() || p.closing.Load() {
			return
		}
		_ = cc.conn.SetReadDeadline(time.Now().Add(p.cfg.IdleTimeout))
		if _, err := br.Peek(1); err != nil || !cc.setActive() {
			return
		}
		keep := p.serveRequest(cc, br, bw)
		cc.served.Add(1)
		if !keep {
			return
		}
	}
}

// serveRequest reads, checks and handles one request. It reports whether
// the connection may be reused.
func (p *Proxy) serveRequest(cc *clientConn, br *bufio.Reader, bw *bufio.Writer) bool {
	start := time.Now()
	ev := Event{Time: start, Conn: cc.id}
	_ = cc.conn.SetReadDeadline(start.Add(p.cfg.HeaderTimeout))
	head, err := readHead(br, p.cfg.MaxHeaderBytes)
	if err != nil {
		var ne net.Error
		switch {
		case errors.Is(err, errHeadTooLarge):
			return p.reject(bw, ev, "", http.StatusRequestHeaderFieldsTooLarge,
				fmt.Sprintf("request header larger than %d bytes", p.cfg.MaxHeaderBytes), true)
		case errors.As(err, &ne) && ne.Timeout():
			// Slowloris: the head did not arrive in time. Answer and
			// hang up; the slot is what the client was after.
			return p.reject(bw, ev, "", http.StatusRequestTimeout,
				fmt.Sprintf("request header not received within %s", p.cfg.HeaderTimeout), true)
		case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
			return false
		}
		return p.reject(bw, ev, "", http.StatusBadRequest, "malformed request: "+err.Error(), true)
	}
	info, err := checkHead(head)
	ev.Method, ev.URL = info.method, clip(info.target)
	if err != nil {
		return p.reject(bw, ev, info.method, http.StatusBadRequest, "rejected request: "+err.Error(), true)
	}
	req, err := http.ReadRequest(br)
	if err != nil {
		return p.reject(bw, ev, info.method, http.StatusBadRequest, "malformed request: "+err.Error(), true)
	}
	_ = cc.conn.SetReadDeadline(time.Time{})

	var keep bool
	switch {
	case req.Method == http.MethodConnect:
		p.handleConnect(cc, br, bw, info, req)
		return false
	case strings.HasPrefix(info.target, "/"):
		keep = p.handleOrigin(cc, bw, req, ev)
	case req.URL.IsAbs():
		if p.isSelf(cc, req.URL) {
			keep = p.handleOrigin(cc, bw, req, ev)
		} else {
			keep = p.handleForward(cc, bw, info, req)
		}
	default:
		keep = p.reject(bw, ev, req.Method, http.StatusBadRequest, fmt.Sprintf("unsupported request target %q", clip(info.target)), true)
	}
	return keep && !req.Close && p.finishBody(cc, req)
}

// maxDrain is how much of an unread request body the proxy skips to keep a
// connection alive; beyond it, closing is cheaper than reading.
const maxDrain = 256 << 10

// finishBody makes sure the request body has been consumed before the
// next request is read from the same connection, so that body bytes can
// never be parsed as a request head.
func (p *Proxy) finishBody(cc *clientConn, req *http.Request) bool {
	if req.Body == nil || req.Body == http.NoBody {
		return true
	}
	_ = cc.conn.SetReadDeadline(time.Now().Add(p.cfg.HeaderTimeout))
	n, err := io.CopyN(io.Discard, req.Body, maxDrain+1)
	_ = cc.conn.SetReadDeadline(time.Time{})
	return n <= maxDrain && errors.Is(err, io.EOF)
}

// handleOrigin serves origin-form requests, which only the /gomod/
// endpoint accepts; anything else is a client that was not told to use the
// proxy, and the answer says how.
func (p *Proxy) handleOrigin(cc *clientConn, bw *bufio.Writer, req *http.Request, ev Event) bool {
	if rest, ok := strings.CutPrefix(req.URL.Path, "/gomod/"); ok {
		return p.handleGoMod(cc, bw, req, rest, ev)
	}
	return p.reject(bw, ev, req.Method, http.StatusBadRequest, fmt.Sprintf(
		"this is the egress proxy of step %q; send requests through it with HTTP_PROXY/HTTPS_PROXY (absolute URLs or CONNECT), or fetch Go modules via GOPROXY from /gomod/",
		p.cfg.Step), req.Close)
}

// isSelf reports whether an absolute URL points at the proxy's own
// listening address, as a client with HTTP_PROXY set but no NO_PROXY
// exception for loopback sends GOPROXY requests.
func (p *Proxy) isSelf(cc *clientConn, u *url.URL) bool {
	la, ok := cc.conn.LocalAddr().(*net.TCPAddr)
	if !ok {
		return false
	}
	host, port, err := splitHostPortDefault(u.Host, 80)
	if err != nil {
		return false
	}
	_, ip, isIP, err := NormalizeHost(host)
	if err != nil || !isIP {
		return false
	}
	return netip.AddrPortFrom(ip, uint16(port)) == netip.AddrPortFrom(la.AddrPort().Addr().Unmap(), la.AddrPort().Port())
}

// reject records a denial that happened before any destination was
// decided (malformed or smuggling requests) and answers it.
func (p *Proxy) reject(bw *bufio.Writer, ev Event, method string, status int, msg string, closeConn bool) bool {
	ev.Decision = DecisionDeny
	ev.Status = status
	ev.Reason = msg
	p.record(ev)
	target := ""
	if ev.Host != "" {
		target = hostPort(ev.Host, ev.Port)
	}
	p.sum.deny(target, "", msg)
	if err := writeText(bw, method, status, msg, closeConn); err != nil {
		return false
	}
	return !closeConn
}

// denyRequest records and answers a policy denial with 403 and a message
// that tells the user exactly what to add to the allowlist.
func (p *Proxy) denyRequest(bw *bufio.Writer, ev Event, method string, t target, d Decision, closeConn bool) bool {
	ev.Decision = DecisionDeny
	ev.Status = http.StatusForbidden
	ev.Reason = d.Reason
	p.record(ev)
	p.noteDecision(t.host, t.port, d)
	return writeText(bw, method, http.StatusForbidden, p.denyMessage(t, d), closeConn) == nil && !closeConn
}

func (p *Proxy) denyMessage(t target, d Decision) string {
	msg := fmt.Sprintf("egress to %q denied for step %q: %s", hostPort(t.host, t.port), p.cfg.Step, d.Reason)
	if d.Hint != "" && !d.Special {
		msg += fmt.Sprintf("; add %q to egress.allow of step %q", d.Hint, p.cfg.Step)
	}
	return msg
}
