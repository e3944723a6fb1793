package egress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// httpsWithoutConnect answers a client that sent an https:// URL as a
// plain proxy request. Steps always get HTTPS_PROXY, so the cause is a
// client that cannot CONNECT (busybox wget is one), not a missing setting.
const httpsWithoutConnect = "https:// URLs must be tunnelled with CONNECT, and this client sent the https:// URL as a plain proxy request: " +
	"it cannot CONNECT (busybox wget cannot; HTTPS_PROXY is already set); use a client that tunnels, such as curl or GNU wget"

// handleForward serves an absolute-form request (HTTP_PROXY): check, then
// send it to the checked address and stream the answer back. It reports
// whether the client connection may be reused.
func (p *Proxy) handleForward(cc *clientConn, bw *bufio.Writer, info headInfo, req *http.Request) bool {
	ev := Event{Time: time.Now(), Conn: cc.id, Method: req.Method, Scheme: "http"}
	u := req.URL
	ev.URL = clip(info.target)
	switch {
	case strings.EqualFold(u.Scheme, "https"):
		return p.reject(bw, ev, req.Method, http.StatusBadRequest,
			httpsWithoutConnect, true)
	case !strings.EqualFold(u.Scheme, "http"):
		return p.reject(bw, ev, req.Method, http.StatusBadRequest, fmt.Sprintf("unsupported URL scheme %q", clip(u.Scheme)), true)
	case u.User != nil:
		// "http://allowed.example@evil.example/" style confusion.
		return p.reject(bw, ev, req.Method, http.StatusBadRequest, "user info in the request URL is not allowed", true)
	}
	host, port, err := splitHostPortDefault(u.Host, 80)
	if err != nil {
		return p.reject(bw, ev, req.Method, http.StatusBadRequest, "invalid request target: "+err.Error(), true)
	}
	ev.Host, ev.Port = clip(host), port
	if err := checkHostHeader(info, host, port, 80); err != nil {
		return p.reject(bw, ev, req.Method, http.StatusBadRequest, err.Error(), true)
	}

	t, d, resolveErr := p.authorizeTarget(cc.ctx, host, port)
	ev.Host, ev.Rule, ev.Decision = t.host, d.Rule, decisionString(d)
	ev.URL = (&url.URL{Scheme: "http", Host: hostHeader(t, 80), Path: u.Path, RawPath: u.RawPath, RawQuery: u.RawQuery}).String()
	if !d.Allowed {
		return p.denyRequest(bw, ev, req.Method, t, d, true)
	}
	p.noteDecision(t.host, t.port, d)
	if resolveErr != nil {
		return p.upstreamFailed(bw, ev, req.Method, d.Reason, http.StatusBadGateway)
	}
	if hit, deny := p.lookupStored(req.Method, ev.URL, req.Header, nil); deny != "" {
		return p.reject(bw, ev, req.Method, http.StatusForbidden, deny, false)
	} else if hit != nil {
		keep := p.serveHitRaw(bw, req, hit, &ev)
		p.record(ev)
		return keep
	}

	ctx, cancel := context.WithCancel(cc.ctx)
	defer cancel()
	guard := newStallGuard(p.cfg.IdleTimeout, cancel)
	defer guard.stop()

	out := &http.Request{
		Method:     req.Method,
		URL:        &url.URL{Scheme: "http", Path: u.Path, RawPath: u.RawPath, RawQuery: u.RawQuery},
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     req.Header.Clone(),
		Host:       hostHeader(t, 80),
	}
	removeHopHeaders(out.Header)
	if _, ok := out.Header["User-Agent"]; !ok {
		out.Header["User-Agent"] = []string{""} // do not add Go's default
	}
	var body *clientBody
	if req.Body != nil && req.Body != http.NoBody {
		body = &clientBody{r: req.Body, conn: cc.conn, idle: p.cfg.IdleTimeout, progress: guard.touch}
		out.Body, out.ContentLength = body, req.ContentLength
		if strings.EqualFold(req.Header.Get("Expect"), "100-continue") {
			// The decision is made; let the client send its body.
			out.Header.Del("Expect")
			bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
			if bw.Flush() != nil {
				return false
			}
		}
	}

	resp, ap, err := p.roundTrip(ctx, p.transports.plain, out, d, t.port)
	if err != nil {
		if body != nil {
			ev.BytesOut = body.n.Load()
		}
		return p.upstreamFailed(bw, ev, req.Method, upstreamErrText(ctx, err), http.StatusBadGateway) && body == nil
	}
	guard.touch()
	ev.Addr = ap.String()
	keep := p.streamResponse(bw, req, resp, guard, &ev)
	if body != nil {
		ev.BytesOut = body.n.Load()
		// net/http may still be reading the body if upstream answered
		// early; reusing the connection would race with it.
		if !body.eof.Load() {
			keep = false
		}
	}
	p.record(ev)
	return keep
}

// checkHostHeader requires the Host header, when present, to name the same
// host and port as the request target. A mismatch means a client and the
// upstream could disagree about where the request goes: the classic
// virtual-host confusion used to reach a host the policy never saw.
func checkHostHeader(info headInfo, host string, port, defPort int) error {
	if len(info.hosts) == 0 {
		return nil
	}
	hh, hp, err := splitHostPortDefault(info.hosts[0], defPort)
	if err == nil {
		var a, b string
		a, _, _, err = NormalizeHost(hh)
		if err == nil {
			b, _, _, err = NormalizeHost(host)
		}
		if err == nil && a == b && hp == port {
			return nil
		}
	}
	return fmt.Errorf("Host header %q does not match request target %q (possible request smuggling)", clip(info.hosts[0]), clip(host+":"+strconv.Itoa(port)))
}

// upstreamFailed answers a request that policy allowed but that could not
// be completed upstream, and records it.
func (p *Proxy) upstreamFailed(bw *bufio.Writer, ev Event, method, reason string, status int) bool {
	ev.Status = status
	ev.Reason = reason
	p.record(ev)
	msg := fmt.Sprintf("egress to %q for step %q failed: %s", hostPort(ev.Host, ev.Port), p.cfg.Step, reason)
	return writeText(bw, method, status, msg, false) == nil
}

func upstreamErrText(ctx context.Context, err error) string {
	if ctx.Err() != nil {
		return "upstream stalled or the client went away: " + err.Error()
	}
	return "upstream: " + err.Error()
}

// streamResponse writes resp to the client, hashing the body as it goes by.
// It fills ev's status, byte count and (for a complete body) hash, and
// reports whether the client connection may be reused.
func (p *Proxy) streamResponse(bw *bufio.Writer, req *http.Request, resp *http.Response, guard *stallGuard, ev *Event) bool {
	defer resp.Body.Close()
	ev.Status = resp.StatusCode
	removeHopHeaders(resp.Header)
	resp.Header.Del("Content-Length")

	keep := !req.Close && !p.closing.Load()
	hasBody := bodyAllowed(req.Method, resp.StatusCode)
	chunked := false
	bw.WriteString(statusLine(resp))
	resp.Header.Write(bw)
	switch {
	case !hasBody:
		if req.Method == http.MethodHead && resp.ContentLength >= 0 {
			bw.WriteString("Content-Length: " + strconv.FormatInt(resp.ContentLength, 10) + "\r\n")
		}
	case resp.ContentLength >= 0:
		bw.WriteString("Content-Length: " + strconv.FormatInt(resp.ContentLength, 10) + "\r\n")
	case req.ProtoAtLeast(1, 1):
		bw.WriteString("Transfer-Encoding: chunked\r\n")
		chunked = true
	default:
		keep = false // HTTP/1.0: the end of the body is the end of the connection
	}
	if !keep {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
	if !hasBody {
		if err := bw.Flush(); err != nil {
			ev.Reason = "writing to client: " + err.Error()
			return false
		}
		return keep
	}

	var dst io.Writer = bw
	var cw io.WriteCloser
	if chunked {
		cw = httputil.NewChunkedWriter(bw)
		dst = cw
	}
	h := p.newBodySink(req, resp, ev) // hashes, and keeps the body in the store
	defer h.abort()
	n, rerr, werr := copyStream(dst, resp.Body, h, guard.touch)
	ev.BytesIn = n
	if rerr == nil && werr == nil && chunked {
		if werr = cw.Close(); werr == nil {
			_, werr = bw.WriteString("\r\n")
		}
	}
	if werr == nil {
		werr = bw.Flush()
	}
	switch {
	case werr != nil:
		ev.Reason = "writing to client: " + werr.Error()
		return false
	case rerr != nil:
		// The client cannot be told mid-body; closing the connection
		// is how it learns the body is truncated.
		ev.Reason = "reading upstream body: " + rerr.Error()
		if errors.Is(rerr, context.Canceled) {
			ev.Reason = "upstream stalled: no data for " + p.cfg.IdleTimeout.String()
		}
		return false
	}
	h.finish(ev)
	ev.Size = n
	return keep
}
