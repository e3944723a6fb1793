package egress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"
)

// handleConnect serves a CONNECT tunnel (HTTPS_PROXY). Order matters:
// decide on host:port (403 before any tunnel exists), answer 200, read and
// check the ClientHello, and only then dial the checked address — so a
// tunnel that fails the SNI check never reaches the upstream at all.
//
// For an IP-literal CONNECT (which needs an IP/CIDR rule) the ClientHello
// must carry no server name or that same IP. ClientHellos using Encrypted
// Client Hello are refused: the name they really ask for is hidden, so the
// check would be meaningless.
func (p *Proxy) handleConnect(cc *clientConn, br *bufio.Reader, bw *bufio.Writer, info headInfo, req *http.Request) {
	ev := Event{Time: time.Now(), Conn: cc.id, Method: http.MethodConnect, Scheme: "connect", URL: clip(info.target)}
	host, port, err := splitHostPortDefault(info.target, 0)
	if err != nil || info.target[0] == '/' {
		msg := "CONNECT needs host:port"
		if err != nil {
			msg += ": " + err.Error()
		}
		p.reject(bw, ev, req.Method, http.StatusBadRequest, msg, true)
		return
	}
	ev.Host, ev.Port = clip(host), port
	if err := checkHostHeader(info, host, port, port); err != nil {
		p.reject(bw, ev, req.Method, http.StatusBadRequest, err.Error(), true)
		return
	}
	if req.Body != http.NoBody {
		p.reject(bw, ev, req.Method, http.StatusBadRequest, "CONNECT with a request body", true)
		return
	}

	t, d, resolveErr := p.authorizeTarget(cc.ctx, host, port)
	ev.Host, ev.Rule, ev.Decision = t.host, d.Rule, decisionString(d)
	ev.URL = hostPort(t.host, t.port)
	if !d.Allowed {
		p.denyRequest(bw, ev, req.Method, t, d, true)
		return
	}
	if resolveErr != nil {
		p.noteDecision(t.host, t.port, d)
		p.upstreamFailed(bw, ev, req.Method, d.Reason, http.StatusBadGateway)
		return
	}

	bw.WriteString("HTTP/1.1 200 Connection established\r\n\r\n")
	if err := bw.Flush(); err != nil {
		return
	}
	ev.Status = http.StatusOK

	_ = cc.conn.SetReadDeadline(time.Now().Add(p.cfg.HeaderTimeout))
	raw, ch, err := readClientHello(br)
	if err == nil {
		err = checkSNI(t, ch)
	}
	if err != nil {
		ev.Decision, ev.Status, ev.Rule = DecisionDeny, 0, ""
		ev.Reason = "tunnel refused: " + err.Error()
		ev.BytesOut = int64(len(raw))
		p.record(ev)
		p.sum.deny(hostPort(t.host, t.port), "", ev.Reason)
		return
	}
	p.noteDecision(t.host, t.port, d)
	if p.cfg.Inspect != nil || p.cfg.Offline {
		p.inspectTunnel(cc, br, raw, t, d, ev) // inspect.go
		return
	}

	up, ap, err := p.dialChecked(cc.ctx, d, t.port)
	if err != nil {
		ev.Status, ev.Reason = http.StatusBadGateway, "dial: "+err.Error()
		ev.BytesOut = int64(len(raw))
		p.record(ev)
		return
	}
	ev.Addr = ap.String()
	if !cc.addCloser(up) {
		up.Close()
		return
	}
	// Forward the checked ClientHello and anything the client already
	// sent behind it, then splice the raw connections.
	early, _ := br.Peek(br.Buffered())
	first := append(raw, early...)
	_ = up.SetWriteDeadline(time.Now().Add(p.cfg.IdleTimeout))
	if _, err := up.Write(first); err != nil {
		ev.Status, ev.Reason = http.StatusBadGateway, "writing to upstream: "+err.Error()
		p.record(ev)
		return
	}
	br.Discard(len(early))
	_ = cc.conn.SetReadDeadline(time.Time{})
	out, in := splice(cc.conn, up, p.cfg.IdleTimeout)
	ev.BytesOut, ev.BytesIn = int64(len(first))+out, in
	p.record(ev)
}

// checkSNI compares the ClientHello's server name with the CONNECT target.
func checkSNI(t target, ch clientHello) error {
	if ch.hasECH {
		return errors.New("ClientHello uses Encrypted Client Hello, which hides the server name")
	}
	if t.isIP {
		if !ch.hasSNI {
			return nil
		}
		if a, err := netip.ParseAddr(ch.serverName); err == nil && a.Unmap() == t.ip {
			return nil
		}
		return fmt.Errorf("ClientHello asks for %q but the tunnel is to %s", clip(ch.serverName), t.ip)
	}
	if !ch.hasSNI {
		return fmt.Errorf("ClientHello has no server name; it must name %q", t.host)
	}
	h, _, isIP, err := NormalizeHost(ch.serverName)
	if err != nil || isIP || h != t.host {
		return fmt.Errorf("ClientHello asks for %q but the tunnel is to %q", clip(ch.serverName), t.host)
	}
	return nil
}

// dialChecked connects to the first reachable checked address.
func (p *Proxy) dialChecked(ctx context.Context, d Decision, port int) (net.Conn, netip.AddrPort, error) {
	var lastErr error = errors.New("no address to connect to")
	for _, a := range d.Addrs {
		ap := netip.AddrPortFrom(a, uint16(port))
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		c, err := p.cfg.Dial(dctx, "tcp", ap)
		cancel()
		if err == nil {
			return c, ap, nil
		}
		lastErr = err
	}
	return nil, netip.AddrPort{}, lastErr
}
