package egress

// TLS inspection. With Config.Inspect set, an allowed CONNECT tunnel whose
// ClientHello passed the SNI check is not spliced: the proxy completes the
// TLS handshake itself with a leaf minted for the tunnel's host by the
// run's CA (whose certificate the runner put into the step's trust store),
// serves HTTP/1.1 or HTTP/2 (whichever the client offers through ALPN)
// inside it, and sends each request upstream over a new TLS connection
// that it verifies normally (Config.TLSConfig, else the host's roots).
// Every request inside is an Event of its own with the full https:// URL,
// status, and the sha256 of the body as streamed; the tunnel ends with one
// more Event (method CONNECT, Inspected) for its byte counts.
//
// A client that refuses the proxy's certificate (it pins, or ignores
// SSL_CERT_FILE and friends) gets no tunnel at all: the refusal is a denial
// with a hint, never a silent fallback to an opaque, unrecorded splice.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// authorizeTarget decides on host:port: as authorize does, or, offline,
// without resolving anything (nothing will be dialed).
func (p *Proxy) authorizeTarget(ctx context.Context, host string, port int) (target, Decision, error) {
	if !p.cfg.Offline {
		return p.authorize(ctx, host, port)
	}
	t := target{port: port}
	h, ip, isIP, err := NormalizeHost(host)
	if err != nil {
		t.host = clip(host)
		return t, Decision{Reason: "invalid host: " + err.Error()}, nil
	}
	t.host, t.ip, t.isIP = h, ip, isIP
	audit := p.cfg.Mode == Audit
	if isIP || port < 1 || port > 65535 {
		return t, p.cfg.Policy.decide(h, port, nil, audit), nil
	}
	if r, ok := p.cfg.Policy.matchName(h, port); ok {
		return t, Decision{Allowed: true, Rule: r.String(), Reason: "matched " + r.String() + " (offline: not resolved)"}, nil
	}
	if audit {
		return t, Decision{Allowed: true, Audit: true, Hint: hostPort(h, port), Reason: "audit mode: no rule matches (offline)"}, nil
	}
	return t, Decision{Reason: "no rule matches", Hint: hostPort(h, port)}, nil
}

// checkInspectConfig completes and checks the inspection, store and
// offline settings of a Config.
func checkInspectConfig(cfg *Config) error {
	switch cfg.Cache {
	case CacheRecord, CachePrefer, CacheOff:
	default:
		return fmt.Errorf("egress: invalid cache mode %d", int(cfg.Cache))
	}
	if cfg.Replay != nil {
		cfg.Offline = true
	}
	if (cfg.Offline || cfg.Cache == CachePrefer) && cfg.Store == nil {
		return errors.New("egress: serving from the cache (offline, replay or cache prefer) needs a Store")
	}
	if cfg.Offline {
		// Defence in depth: nothing below may reach the network.
		cfg.Dial = func(context.Context, string, netip.AddrPort) (net.Conn, error) {
			return nil, errors.New("offline run: no upstream connections")
		}
		cfg.Resolve = func(context.Context, string) ([]netip.Addr, error) {
			return nil, errors.New("offline run: nothing is resolved")
		}
	}
	return nil
}

// inspectTunnel serves a CONNECT tunnel whose ClientHello (raw, already
// read from br) passed the checks, by terminating its TLS.
func (p *Proxy) inspectTunnel(cc *clientConn, br *bufio.Reader, raw []byte, t target, d Decision, ev Event) {
	ev.Inspected = true
	if p.cfg.Inspect == nil {
		// Offline without inspection: an opaque tunnel has nothing that
		// could be replayed.
		ev.Decision, ev.Status = DecisionDeny, 0
		ev.Reason = "offline run: a TLS tunnel can be replayed only with TLS inspection (the recorded run must have used egress.inspect)"
		ev.BytesOut = int64(len(raw))
		p.record(ev)
		p.sum.deny(hostPort(t.host, t.port), "", ev.Reason)
		return
	}
	early, _ := br.Peek(br.Buffered())
	pre := append(append([]byte(nil), raw...), early...)
	br.Discard(len(early))
	conn := &inspectConn{Conn: cc.conn, pre: pre}

	host := t.host
	tc := tls.Server(conn, &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return p.cfg.Inspect.leafFor(host)
		},
	})
	_ = cc.conn.SetDeadline(time.Now().Add(p.cfg.HeaderTimeout))
	hctx, cancel := context.WithTimeout(cc.ctx, p.cfg.HeaderTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	_ = cc.conn.SetDeadline(time.Time{})
	if err != nil {
		ev.Decision, ev.Status, ev.Rule = DecisionDeny, 0, ""
		ev.Reason = handshakeRefusal(hostPort(t.host, t.port), err)
		ev.BytesIn, ev.BytesOut = conn.in.Load(), conn.out.Load()
		p.record(ev)
		p.sum.deny(hostPort(t.host, t.port), "", ev.Reason)
		tc.Close()
		return
	}

	h := &inspectHandler{p: p, cc: cc, t: t, d: d}
	cc.setIdle() // between requests, Shutdown may close the tunnel
	if tc.ConnectionState().NegotiatedProtocol == "h2" {
		srv := &http2.Server{IdleTimeout: p.cfg.IdleTimeout, MaxUploadBufferPerConnection: 1 << 20}
		srv.ServeConn(tc, &http2.ServeConnOpts{
			Context:    cc.ctx,
			Handler:    h,
			BaseConfig: &http.Server{ReadHeaderTimeout: p.cfg.HeaderTimeout, MaxHeaderBytes: p.cfg.MaxHeaderBytes, ErrorLog: quietLog},
		})
		tc.Close()
	} else {
		l := newOneConnListener(tc)
		srv := &http.Server{
			Handler:           h,
			ReadHeaderTimeout: p.cfg.HeaderTimeout,
			IdleTimeout:       p.cfg.IdleTimeout,
			MaxHeaderBytes:    p.cfg.MaxHeaderBytes,
			TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){}, // ALPN already chose HTTP/1.1
			ErrorLog:          quietLog,
			BaseContext:       func(net.Listener) context.Context { return cc.ctx },
			ConnState:         l.connState,
		}
		srv.Serve(l)
	}
	ev.BytesIn, ev.BytesOut = conn.in.Load(), conn.out.Load()
	ev.Reason = fmt.Sprintf("TLS inspected (%d requests recorded separately)", h.requests.Load())
	p.record(ev)
}

// handshakeRefusal explains a failed handshake with the step's client.
func handshakeRefusal(target string, err error) string {
	msg := err.Error()
	hint := ""
	switch {
	case strings.Contains(msg, "unknown certificate authority"), strings.Contains(msg, "bad certificate"),
		strings.Contains(msg, "certificate unknown"), strings.Contains(msg, "unsupported certificate"),
		strings.Contains(msg, "access denied"),
		// Some clients (OpenSSL builds among them) answer a certificate
		// they reject with a bad_record_mac alert rather than a CA alert.
		strings.Contains(msg, "bad record MAC"):
		hint = "the client does not trust the run's inspection CA: it pins certificates or ignores SSL_CERT_FILE/the system bundle; point it at $SSL_CERT_FILE or set egress.inspect: false for this step"
	case errors.Is(err, io.EOF), strings.Contains(msg, "connection reset"):
		hint = "the client hung up during the handshake, which is how many clients reject a certificate they do not trust (pinning, or a CA bundle of their own); point it at $SSL_CERT_FILE or set egress.inspect: false for this step"
	default:
		hint = "the TLS handshake with the step failed"
	}
	return fmt.Sprintf("TLS inspection of %s refused: %s (%s); no unrecorded tunnel is offered instead", target, hint, clip(msg))
}

var quietLog = log.New(io.Discard, "", 0)

// inspectConn is the client connection as TLS sees it: first the bytes
// already read while checking the ClientHello, then the socket. It counts
// bytes both ways for the tunnel's event.
type inspectConn struct {
	net.Conn
	pre     []byte
	in, out atomic.Int64 // in: towards the client; out: from the client
}

func (c *inspectConn) Read(b []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(b, c.pre)
		c.pre = c.pre[n:]
		c.out.Add(int64(n))
		return n, nil
	}
	n, err := c.Conn.Read(b)
	c.out.Add(int64(n))
	return n, err
}

func (c *inspectConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.in.Add(int64(n))
	return n, err
}

// oneConnListener hands one connection to an http.Server and then blocks
// until that connection is closed, so that Serve returns exactly when the
// tunnel ends.
type oneConnListener struct {
	c     net.Conn
	taken atomic.Bool
	once  sync.Once
	done  chan struct{}
}

func newOneConnListener(c net.Conn) *oneConnListener {
	return &oneConnListener{c: c, done: make(chan struct{})}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if !l.taken.Swap(true) {
		return l.c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) connState(_ net.Conn, s http.ConnState) {
	if s == http.StateClosed || s == http.StateHijacked {
		l.Close()
	}
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.c.LocalAddr() }

// inspectHandler forwards the requests of one inspected tunnel.
type inspectHandler struct {
	p        *Proxy
	cc       *clientConn
	t        target
	d        Decision
	requests atomic.Int64

	mu       sync.Mutex
	inflight int
}

// enter and leave keep the client connection's state "active" while any
// request of the tunnel is in flight and "idle" otherwise, as the plain
// request loop does, so that Shutdown closes idle tunnels at once and
// waits for busy ones.
func (h *inspectHandler) enter() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.inflight++; h.inflight == 1 {
		h.cc.setActive()
	}
}

func (h *inspectHandler) leave() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.inflight--; h.inflight == 0 {
		h.cc.setIdle()
	}
}

func (h *inspectHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p, t := h.p, h.t
	h.requests.Add(1)
	h.enter()
	defer h.leave()
	ev := Event{
		Time: time.Now(), Conn: h.cc.id, Method: r.Method, Scheme: "https",
		Host: t.host, Port: t.port, Rule: h.d.Rule, Decision: decisionString(h.d),
	}
	u := &url.URL{Scheme: "https", Host: hostHeader(t, 443), Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	ev.URL = u.String()
	if r.Method == http.MethodConnect {
		h.refuse(w, &ev, http.StatusMethodNotAllowed, "CONNECT inside an inspected tunnel is not supported")
		return
	}
	if err := h.checkAuthority(r); err != nil {
		h.refuse(w, &ev, http.StatusMisdirectedRequest, err.Error())
		return
	}
	if r.URL.Path == "" || r.URL.Path[0] != '/' {
		u.Path = "/" + u.Path
		ev.URL = u.String()
	}

	if hit, deny := p.lookupStored(r.Method, ev.URL, r.Header, nil); deny != "" {
		h.refuse(w, &ev, http.StatusForbidden, deny)
		return
	} else if hit != nil {
		p.serveHitHTTP(w, r, hit, &ev)
		p.record(ev)
		return
	}

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	guard := newStallGuard(p.cfg.IdleTimeout, cancel)
	defer guard.stop()
	out := &http.Request{
		Method:     r.Method,
		URL:        &url.URL{Scheme: "https", Path: u.Path, RawPath: u.RawPath, RawQuery: u.RawQuery},
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     r.Header.Clone(),
		Host:       hostHeader(t, 443),
	}
	removeHopHeaders(out.Header)
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = []string{""}
	}
	var body *countingReader
	if r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
		body = &countingReader{r: r.Body, progress: guard.touch}
		out.Body, out.ContentLength = body, r.ContentLength
	}
	resp, ap, err := p.roundTrip(ctx, p.transports.forScheme("https", t.host), out, h.d, t.port)
	if body != nil {
		ev.BytesOut = body.n.Load()
	}
	if err != nil {
		reason := upstreamErrText(ctx, err)
		var ce *tls.CertificateVerificationError
		if errors.As(err, &ce) {
			reason = "upstream certificate not trusted: " + err.Error()
		}
		ev.Status, ev.Reason = http.StatusBadGateway, reason
		p.record(ev)
		writeHTTPText(w, r.Method, http.StatusBadGateway, fmt.Sprintf("egress to %q for step %q failed: %s", hostPort(t.host, t.port), p.cfg.Step, reason))
		return
	}
	guard.touch()
	ev.Addr = ap.String()
	h.stream(w, r, resp, guard, &ev)
}

// checkAuthority requires the request's authority (Host, or :authority in
// HTTP/2) to name the tunnel's host and port: the certificate was minted
// for that host and the policy decided on it, so a request for another
// host inside the tunnel is misdirected.
func (h *inspectHandler) checkAuthority(r *http.Request) error {
	auth := r.Host
	if r.URL.IsAbs() {
		auth = r.URL.Host
	}
	if auth == "" {
		return nil
	}
	host, port, err := splitHostPortDefault(auth, h.t.port)
	if err == nil {
		var n string
		n, _, _, err = NormalizeHost(host)
		if err == nil && n == h.t.host && port == h.t.port {
			return nil
		}
	}
	return fmt.Errorf("request for %q inside the tunnel to %q (misdirected request)", clip(auth), hostPort(h.t.host, h.t.port))
}

func (h *inspectHandler) refuse(w http.ResponseWriter, ev *Event, status int, msg string) {
	ev.Decision, ev.Status, ev.Reason = DecisionDeny, status, msg
	h.p.record(*ev)
	h.p.sum.deny(hostPort(h.t.host, h.t.port), "", msg)
	writeHTTPText(w, ev.Method, status, msg)
}

// stream writes the upstream answer to the step, hashing (and storing) the
// body on the way. A body cut short upstream aborts the response, so the
// client sees a truncated transfer rather than a short success.
func (h *inspectHandler) stream(w http.ResponseWriter, r *http.Request, resp *http.Response, guard *stallGuard, ev *Event) {
	p := h.p
	defer resp.Body.Close()
	ev.Status = resp.StatusCode
	removeHopHeaders(resp.Header)
	resp.Header.Del("Content-Length")
	hdr := w.Header()
	for k, v := range resp.Header {
		hdr[k] = v
	}
	hasBody := bodyAllowed(r.Method, resp.StatusCode)
	if resp.ContentLength >= 0 && (hasBody || r.Method == http.MethodHead) {
		hdr.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	}
	w.WriteHeader(resp.StatusCode)
	if !hasBody {
		p.record(*ev)
		return
	}
	sink := p.newBodySink(r, resp, ev)
	defer sink.abort()
	n, rerr, werr := copyStream(w, resp.Body, sink, guard.touch)
	ev.BytesIn = n
	switch {
	case werr != nil:
		ev.Reason = "writing to client: " + werr.Error()
	case rerr != nil:
		ev.Reason = "reading upstream body: " + rerr.Error()
		if errors.Is(rerr, context.Canceled) {
			ev.Reason = "upstream stalled: no data for " + p.cfg.IdleTimeout.String()
		}
	default:
		sink.finish(ev)
		ev.Size = n
	}
	p.record(*ev)
	if rerr != nil {
		panic(http.ErrAbortHandler)
	}
}

// countingReader counts a request body on its way upstream.
type countingReader struct {
	r        io.Reader
	n        atomic.Int64
	progress func()
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	if n > 0 && c.progress != nil {
		c.progress()
	}
	return n, err
}

func (c *countingReader) Close() error { return nil }

// writeHTTPText answers with a short text/plain message from the proxy
// inside an inspected tunnel (the counterpart of writeText).
func writeHTTPText(w http.ResponseWriter, method string, status int, msg string) {
	body := "cleanroom: " + strings.TrimPrefix(msg, "cleanroom: ") + "\n"
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if method != http.MethodHead {
		io.Copy(w, bytes.NewReader([]byte(body)))
	}
}
