package egress

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// target is a destination after normalisation.
type target struct {
	host string // canonical name, or canonical IP text
	ip   netip.Addr
	isIP bool
	port int
}

// authorize normalises host, resolves it if (and only if) the decision
// needs its addresses, and decides. resolveErr is set when a rule allowed
// the name but it could not be resolved; d is then an allow decision
// without addresses, and the caller answers 502.
func (p *Proxy) authorize(ctx context.Context, host string, port int) (t target, d Decision, resolveErr error) {
	t.port = port
	h, ip, isIP, err := NormalizeHost(host)
	if err != nil {
		t.host = clip(host)
		return t, Decision{Reason: "invalid host: " + err.Error()}, nil
	}
	t.host, t.ip, t.isIP = h, ip, isIP
	audit := p.cfg.Mode == Audit
	var addrs []netip.Addr
	if !isIP && port >= 1 && port <= 65535 {
		rule, matched := p.cfg.Policy.matchName(h, port)
		if !matched && !audit {
			return t, p.cfg.Policy.decide(h, port, nil, false), nil
		}
		rctx, cancel := context.WithTimeout(ctx, p.cfg.IdleTimeout)
		addrs, err = p.cfg.Resolve(rctx, h)
		cancel()
		if err == nil && len(addrs) == 0 {
			err = errors.New("no addresses")
		}
		if err != nil {
			d := Decision{Allowed: true, Reason: fmt.Sprintf("resolving %s: %v", h, err)}
			if matched {
				d.Rule = rule.String()
			} else {
				d.Audit, d.Hint = true, hostPort(h, port)
			}
			return t, d, err
		}
	}
	return t, p.cfg.Policy.decide(h, port, addrs, audit), nil
}

// ctxAllowedAddr carries the one address a transport may dial for a
// request. The transport never sees a name, so it cannot re-resolve; this
// check makes sure it cannot dial anything else either.
type ctxAllowedAddr struct{}

// dialError marks failures to connect, after which another checked address
// of the same name may be tried.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// transports holds the HTTP/1.1 transports for upstream requests: one for
// plain http (pooled by IP:port, which is all it ever dials) and one per
// TLS server name, so that a pooled TLS connection is only ever reused for
// the name it was verified for.
type transports struct {
	p     *Proxy
	plain *http.Transport
	mu    sync.Mutex
	tls   map[string]*http.Transport
}

func (t *transports) init(p *Proxy) {
	t.p = p
	t.plain = t.newTransport(nil)
	t.tls = map[string]*http.Transport{}
}

func (t *transports) newTransport(tc *tls.Config) *http.Transport {
	return &http.Transport{
		Proxy:                  nil, // never chain to whatever proxy the runner's environment names
		DialContext:            t.dial,
		TLSClientConfig:        tc,
		TLSHandshakeTimeout:    t.p.cfg.HeaderTimeout,
		DisableCompression:     true, // pass bodies through byte for byte, so hashes are of what the step got
		MaxIdleConns:           64,
		MaxIdleConnsPerHost:    8,
		IdleConnTimeout:        30 * time.Second,
		MaxResponseHeaderBytes: 1 << 20,
		TLSNextProto:           map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
}

// forScheme returns the transport for an upstream URL scheme and server
// name.
func (t *transports) forScheme(scheme, serverName string) *http.Transport {
	if scheme != "https" {
		return t.plain
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if tr, ok := t.tls[serverName]; ok {
		return tr
	}
	var tc *tls.Config
	if t.p.cfg.TLSConfig != nil {
		tc = t.p.cfg.TLSConfig.Clone()
	} else {
		tc = &tls.Config{}
	}
	tc.ServerName = serverName
	if tc.MinVersion == 0 {
		tc.MinVersion = tls.VersionTLS12
	}
	tr := t.newTransport(tc)
	t.tls[serverName] = tr
	return tr
}

func (t *transports) closeIdle() {
	t.plain.CloseIdleConnections()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, tr := range t.tls {
		tr.CloseIdleConnections()
	}
}

func (t *transports) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("egress: refusing to dial %q: not a checked address", addr)
	}
	if allowed, _ := ctx.Value(ctxAllowedAddr{}).(netip.AddrPort); allowed != ap {
		return nil, fmt.Errorf("egress: refusing to dial %s: not the checked address", ap)
	}
	c, err := t.p.cfg.Dial(ctx, "tcp", ap)
	if err != nil {
		return nil, &dialError{err}
	}
	return c, nil
}

// roundTrip sends req to the checked addresses of d in order; another
// address is tried only after a failure to connect, and only when the
// request has no body (which the failed attempt may have consumed).
// req.Host must already carry the name; req.URL.Host is overwritten.
func (p *Proxy) roundTrip(ctx context.Context, tr *http.Transport, req *http.Request, d Decision, port int) (*http.Response, netip.AddrPort, error) {
	var lastErr error = errors.New("no address to connect to")
	for _, a := range d.Addrs {
		ap := netip.AddrPortFrom(a, uint16(port))
		r := req.Clone(context.WithValue(ctx, ctxAllowedAddr{}, ap))
		r.URL.Host = ap.String()
		resp, err := tr.RoundTrip(r)
		if err == nil {
			return resp, ap, nil
		}
		lastErr = err
		var de *dialError
		if !errors.As(err, &de) || (req.Body != nil && req.Body != http.NoBody) {
			break
		}
	}
	return nil, netip.AddrPort{}, lastErr
}

// splitHostPortDefault splits an authority, with def as the port when none
// is given. The port must be plain decimal 1-65535.
func splitHostPortDefault(authority string, def int) (string, int, error) {
	if authority == "" {
		return "", 0, errors.New("empty authority")
	}
	host, portStr := authority, ""
	if authority[0] == '[' {
		end := strings.IndexByte(authority, ']')
		if end < 0 {
			return "", 0, errors.New("missing ']'")
		}
		host, rest := authority[:end+1], authority[end+1:]
		switch {
		case rest == "":
		case rest[0] == ':':
			portStr = rest[1:]
		default:
			return "", 0, errors.New("unexpected text after ']'")
		}
		return finishHostPort(host, portStr, def)
	}
	if i := strings.LastIndexByte(authority, ':'); i >= 0 {
		if strings.IndexByte(authority[:i], ':') >= 0 {
			return "", 0, errors.New("IPv6 addresses must be bracketed")
		}
		host, portStr = authority[:i], authority[i+1:]
		return finishHostPort(host, portStr, def)
	}
	return finishHostPort(host, "", def)
}

func finishHostPort(host, portStr string, def int) (string, int, error) {
	if portStr == "" {
		if def == 0 {
			return "", 0, errors.New("missing port")
		}
		return host, def, nil
	}
	if len(portStr) > 5 || !allDigits(portStr) {
		return "", 0, fmt.Errorf("invalid port %q", clip(portStr))
	}
	n, _ := strconv.Atoi(portStr)
	if n < 1 || n > 65535 {
		return "", 0, fmt.Errorf("invalid port %q", portStr)
	}
	return host, n, nil
}

// hostHeader renders the Host header for a normalised target, omitting the
// scheme's default port.
func hostHeader(t target, defPort int) string {
	h := t.host
	if t.isIP && t.ip.Is6() {
		h = "[" + h + "]"
	}
	if t.port != defPort {
		h += ":" + strconv.Itoa(t.port)
	}
	return h
}
