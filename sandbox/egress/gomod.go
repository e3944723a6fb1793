package egress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// The /gomod/ endpoint lets GOPROXY point at the proxy itself. It is not an
// open relay to the upstream: only the module proxy protocol's paths
// (<module>/@v/list, <module>/@v/<version>.info|.mod|.zip,
// <module>/@latest) and the checksum database proxy paths
// (sumdb/<name>/supported|latest|lookup/...|tile/...) are forwarded, and
// only with GET or HEAD. The upstream's host is checked against the policy
// like any other destination, and so is every redirect it answers with.

// maxGoModRedirects bounds redirects followed for one module fetch.
const maxGoModRedirects = 5

type goModUpstreams struct {
	mod   *url.URL
	sumdb *url.URL // nil: forward sumdb requests to mod's /sumdb/<name>/
}

func newGoModUpstreams(mod, sumdb *url.URL) (*goModUpstreams, error) {
	if mod == nil {
		if sumdb != nil {
			return nil, errors.New("egress: SumDBUpstream needs GoModUpstream")
		}
		return nil, nil
	}
	if err := checkUpstreamURL(mod); err != nil {
		return nil, fmt.Errorf("egress: GoModUpstream: %w", err)
	}
	if sumdb != nil {
		if err := checkUpstreamURL(sumdb); err != nil {
			return nil, fmt.Errorf("egress: SumDBUpstream: %w", err)
		}
	}
	return &goModUpstreams{mod: mod, sumdb: sumdb}, nil
}

func checkUpstreamURL(u *url.URL) error {
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("scheme must be http or https, not %q", u.Scheme)
	}
	if u.Host == "" || u.Opaque != "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q is not a plain http(s)://host/path URL", u.Redacted())
	}
	if _, _, err := splitHostPortDefault(u.Host, 1); err != nil {
		return fmt.Errorf("host: %w", err)
	}
	return nil
}

// goModRequest is a parsed /gomod/ request.
type goModRequest struct {
	module, version string
	upstream        *url.URL
	local           bool // answered by the proxy itself (sumdb "supported")
}

// parseGoModPath maps the path after /gomod/ to its upstream URL.
func (g *goModUpstreams) parse(rest string) (goModRequest, error) {
	var r goModRequest
	if err := checkGoModPath(rest); err != nil {
		return r, err
	}
	if sub, ok := strings.CutPrefix(rest, "sumdb/"); ok {
		name, op, _ := strings.Cut(sub, "/")
		if _, _, isIP, err := NormalizeHost(name); err != nil || isIP || strings.ToLower(name) != name {
			return r, fmt.Errorf("invalid checksum database name %q", clip(name))
		}
		switch {
		case op == "supported", op == "latest", strings.HasPrefix(op, "tile/"):
		case strings.HasPrefix(op, "lookup/"):
			mod, ver, ok := strings.Cut(strings.TrimPrefix(op, "lookup/"), "@")
			if !ok {
				return r, errors.New("lookup needs <module>@<version>")
			}
			var err error
			if r.module, err = unescapeModPart(mod); err != nil {
				return r, err
			}
			if r.version, err = unescapeModPart(ver); err != nil {
				return r, err
			}
		default:
			return r, fmt.Errorf("unknown checksum database request %q", clip(op))
		}
		switch {
		case g.sumdb == nil:
			r.upstream = joinURL(g.mod, rest)
		case op == "supported":
			r.local = true
		default:
			r.upstream = joinURL(g.sumdb, op)
		}
		return r, nil
	}

	var modEsc, verEsc string
	if i := strings.Index(rest, "/@v/"); i > 0 {
		modEsc = rest[:i]
		file := rest[i+len("/@v/"):]
		if file != "list" {
			ext := file[strings.LastIndexByte(file, '.')+1:]
			if ext != "info" && ext != "mod" && ext != "zip" || len(file) <= len(ext)+1 {
				return r, fmt.Errorf("unknown module file %q", clip(file))
			}
			verEsc = file[:len(file)-len(ext)-1]
		}
	} else if m, ok := strings.CutSuffix(rest, "/@latest"); ok && m != "" {
		modEsc = m
	} else {
		return r, errors.New("not a module proxy path")
	}
	var err error
	if r.module, err = unescapeModPart(modEsc); err != nil {
		return r, err
	}
	if verEsc != "" {
		if r.version, err = unescapeModPart(verEsc); err != nil {
			return r, err
		}
	}
	r.upstream = joinURL(g.mod, rest)
	return r, nil
}

// checkGoModPath allows only the characters module paths, escaped
// versions and tile paths use, and no empty, "." or ".." segments: the
// upstream must see exactly the path we checked.
func checkGoModPath(p string) error {
	if p == "" || len(p) > 1024 {
		return errors.New("bad path length")
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~!+@/", c) >= 0) {
			return fmt.Errorf("invalid character %q in module path", c)
		}
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return errors.New("empty, \".\" or \"..\" path segment")
		}
	}
	return nil
}

// unescapeModPart undoes the module proxy's case encoding ("!x" is "X").
func unescapeModPart(s string) (string, error) {
	var b strings.Builder
	bang := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case bang:
			if c < 'a' || c > 'z' {
				return "", fmt.Errorf("invalid escaped path %q", clip(s))
			}
			b.WriteByte(c - 'a' + 'A')
			bang = false
		case c == '!':
			bang = true
		case 'A' <= c && c <= 'Z':
			return "", fmt.Errorf("invalid escaped path %q (upper case must be escaped)", clip(s))
		default:
			b.WriteByte(c)
		}
	}
	if bang || b.Len() == 0 {
		return "", fmt.Errorf("invalid escaped path %q", clip(s))
	}
	return b.String(), nil
}

// joinURL appends rest (already restricted to characters that need no
// escaping) to base's path. RawPath is set so that the upstream sees the
// path byte for byte as checked ('!' stays '!', not %21).
func joinURL(base *url.URL, rest string) *url.URL {
	u := *base
	u.Path = strings.TrimSuffix(base.Path, "/") + "/" + rest
	u.RawPath = strings.TrimSuffix(base.EscapedPath(), "/") + "/" + rest
	return &u
}

// handleGoMod serves /gomod/<rest>.
func (p *Proxy) handleGoMod(cc *clientConn, bw *bufio.Writer, req *http.Request, rest string, ev Event) bool {
	ev.URL = "/gomod/" + clip(rest)
	if p.gomod == nil {
		return p.reject(bw, ev, req.Method, http.StatusNotFound, fmt.Sprintf(
			"the Go module endpoint /gomod/ is not enabled for step %q (no upstream module proxy is configured)", p.cfg.Step), req.Close)
	}
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return p.reject(bw, ev, req.Method, http.StatusMethodNotAllowed, "the Go module endpoint accepts only GET and HEAD", req.Close)
	}
	if strings.ContainsAny(req.RequestURI, "%?#") {
		return p.reject(bw, ev, req.Method, http.StatusNotFound, "not a module proxy request: query strings and escaped paths are not used by the protocol", req.Close)
	}
	gr, err := p.gomod.parse(rest)
	if err != nil {
		return p.reject(bw, ev, req.Method, http.StatusNotFound, "not a module proxy request: "+err.Error(), req.Close)
	}
	ev.Module, ev.Version = gr.module, gr.version
	if gr.local {
		ev.Decision, ev.Status, ev.Reason = DecisionAllow, http.StatusOK, "checksum database proxying supported"
		p.record(ev)
		return writeText(bw, req.Method, http.StatusOK, "checksum database proxied", false) == nil
	}
	return p.fetchGoMod(cc, bw, req, gr, ev)
}

// fetchGoMod fetches gr.upstream, following redirects itself (each one
// checked and recorded) so that the go command never has to reach a CDN on
// its own.
func (p *Proxy) fetchGoMod(cc *clientConn, bw *bufio.Writer, req *http.Request, gr goModRequest, base Event) bool {
	u := gr.upstream
	origHost := u.Host
	for hop := 0; ; hop++ {
		ev := base
		ev.Time = time.Now()
		ev.Scheme = u.Scheme
		ev.URL = redactURL(u)
		defPort := 80
		if u.Scheme == "https" {
			defPort = 443
		}
		host, port, err := splitHostPortDefault(u.Host, defPort)
		if err != nil {
			return p.reject(bw, ev, req.Method, http.StatusBadGateway, "module proxy redirect to invalid host: "+err.Error(), false)
		}
		ev.Host, ev.Port = clip(host), port
		t, d, resolveErr := p.authorizeTarget(cc.ctx, host, port)
		ev.Host, ev.Rule, ev.Decision = t.host, d.Rule, decisionString(d)
		if !d.Allowed {
			return p.denyRequest(bw, ev, req.Method, t, d, false)
		}
		p.noteDecision(t.host, t.port, d)
		if resolveErr != nil {
			return p.upstreamFailed(bw, ev, req.Method, d.Reason, http.StatusBadGateway)
		}
		if hop == 0 {
			if hit, deny := p.lookupStored(req.Method, ev.URL, req.Header, &gr); deny != "" {
				return p.reject(bw, ev, req.Method, http.StatusForbidden, deny, false)
			} else if hit != nil {
				keep := p.serveHitRaw(bw, req, hit, &ev)
				p.record(ev)
				return keep
			}
		} else {
			ev.alias = redactURL(gr.upstream) // the store indexes the body under the asked-for URL too
		}

		out := &http.Request{
			Method:     req.Method,
			URL:        &url.URL{Scheme: u.Scheme, Path: u.Path, RawPath: u.RawPath, RawQuery: u.RawQuery},
			Proto:      "HTTP/1.1",
			ProtoMajor: 1,
			ProtoMinor: 1,
			Header:     http.Header{"User-Agent": {"cleanroom-egress"}},
			Host:       hostHeader(t, defPort),
		}
		if u.User != nil && u.Host == origHost {
			pw, _ := u.User.Password()
			out.SetBasicAuth(u.User.Username(), pw)
		}
		ctx, cancel := context.WithCancel(cc.ctx)
		guard := newStallGuard(p.cfg.IdleTimeout, cancel)
		resp, ap, err := p.roundTrip(ctx, p.transports.forScheme(u.Scheme, t.host), out, d, t.port)
		if err != nil {
			guard.stop()
			cancel()
			return p.upstreamFailed(bw, ev, req.Method, upstreamErrText(ctx, err), http.StatusBadGateway)
		}
		ev.Addr = ap.String()
		if loc := resp.Header.Get("Location"); isRedirect(resp.StatusCode) && loc != "" && hop < maxGoModRedirects {
			next, err := u.Parse(loc)
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			guard.stop()
			cancel()
			ev.Status = resp.StatusCode
			if err != nil || (next.Scheme != "http" && next.Scheme != "https") {
				return p.upstreamFailed(bw, ev, req.Method, fmt.Sprintf("module proxy redirected to an unusable location %q", clip(loc)), http.StatusBadGateway)
			}
			ev.Reason = "redirect to " + redactURL(next)
			p.record(ev)
			next.Fragment = ""
			u = next
			continue
		}
		guard.touch()
		keep := p.streamResponse(bw, req, resp, guard, &ev)
		guard.stop()
		cancel()
		p.record(ev)
		return keep
	}
}

func isRedirect(code int) bool {
	switch code {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return true
	}
	return false
}

// redactURL drops credentials from a URL before it is recorded.
func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	return c.String()
}
