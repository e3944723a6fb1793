package egress

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/cleanroom-ci/cleanroom/sandbox/egress/store"
)

// Mode selects whether the policy is enforced.
type Mode int

const (
	// Enforce denies everything the policy does not allow.
	Enforce Mode = iota
	// Audit allows what the policy would deny and records it as
	// "audit-allow", so that a pipeline's allowlist can be discovered by
	// running it. It still denies special addresses reached without an
	// IP/CIDR rule, malformed or smuggling requests and failed SNI checks:
	// audit relaxes the allowlist, never the protocol checks, and never
	// opens the host, metadata service or internal network to a step.
	Audit
)

func (m Mode) String() string {
	switch m {
	case Enforce:
		return "enforce"
	case Audit:
		return "audit"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode parses "enforce" or "audit".
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "enforce", "":
		return Enforce, nil
	case "audit":
		return Audit, nil
	}
	return 0, fmt.Errorf("egress mode %q: want \"enforce\" or \"audit\"", s)
}

// Config configures a Proxy. Only Policy is needed; every other field has a
// safe default.
type Config struct {
	Step     string  // step name, for events and messages
	Policy   *Policy // nil denies everything
	Mode     Mode
	Recorder Recorder // receives every Event; must be safe for concurrent use
	// Resolve resolves names that a rule allows; default net.DefaultResolver.
	Resolve func(ctx context.Context, host string) ([]netip.Addr, error)
	// Dial connects to an address the policy allowed; default net.Dialer.
	Dial func(ctx context.Context, network string, addr netip.AddrPort) (net.Conn, error)
	// GoModUpstream is the module proxy that /gomod/ forwards to; nil
	// disables the endpoint. Its host must be allowed by Policy.
	GoModUpstream *url.URL
	// SumDBUpstream is the checksum database served under
	// /gomod/sumdb/<name>/; nil forwards those requests to GoModUpstream's
	// /sumdb/<name>/ path, as the go command itself would.
	SumDBUpstream *url.URL
	// TLSConfig is the client TLS configuration for https upstreams; nil
	// uses the system roots. ServerName is always set per upstream.
	TLSConfig *tls.Config
	Logger    hclog.Logger
	// MaxConns bounds concurrent client connections (default 256).
	// Connections beyond it wait for a slot rather than being refused: up
	// to QueueConns of them (default 4 × MaxConns) for up to QueueWait
	// each (default 30s), while idle keep-alive connections are closed to
	// make room. Only a connection that finds the queue full, or waits
	// out QueueWait, gets 503 and is closed.
	MaxConns   int
	QueueConns int
	QueueWait  time.Duration
	// HeaderTimeout bounds reading a request head or ClientHello (default
	// 10s); IdleTimeout bounds keep-alive idleness and any stall while
	// streaming (default 60s).
	HeaderTimeout, IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request head (default 64 KiB).
	MaxHeaderBytes int

	// Inspect, when set, terminates the TLS of allowed CONNECT tunnels with
	// leaves minted by this CA and records every request inside (see
	// inspect.go). Nil splices tunnels opaquely.
	Inspect *InspectCA
	// Store receives the body of every complete 200 answer to a GET;
	// Cache says whether it may also answer requests (see CacheMode).
	Store *store.Store
	Cache CacheMode
	// Offline cuts the upstream entirely: requests are answered from
	// Replay (the materials of a recorded run) or, without Replay, from
	// Store's index; everything else is denied. Nothing is resolved or
	// dialed.
	Offline bool
	Replay  *Materials
}

// Proxy is the egress proxy of one build step.
type Proxy struct {
	cfg   Config
	log   hclog.Logger
	rec   Recorder
	sum   *summary
	gomod *goModUpstreams

	transports transports

	connSeq   atomic.Uint64
	active    atomic.Int64  // connections counted against MaxConns
	slots     chan struct{} // one token per connection being served
	waiting   atomic.Int64  // connections queued for a slot
	rejecting atomic.Int64  // 503 writers in flight
	closing   atomic.Bool
	stop      chan struct{} // closed by Shutdown: queued connections give up
	stopOnce  sync.Once

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*clientConn]struct{}

	onPanic func(any) // test hook: fuzzing must see panics that serveConn contains
}

// New checks cfg and returns a Proxy ready to Serve.
func New(cfg Config) (*Proxy, error) {
	if cfg.Mode != Enforce && cfg.Mode != Audit {
		return nil, fmt.Errorf("egress: invalid mode %d", int(cfg.Mode))
	}
	if cfg.Policy == nil {
		cfg.Policy = &Policy{}
	}
	if cfg.Recorder == nil {
		cfg.Recorder = nopRecorder{}
	}
	if cfg.Resolve == nil {
		cfg.Resolve = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	if cfg.Dial == nil {
		d := &net.Dialer{Timeout: 30 * time.Second}
		cfg.Dial = func(ctx context.Context, network string, addr netip.AddrPort) (net.Conn, error) {
			return d.DialContext(ctx, network, addr.String())
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 256
	}
	if cfg.QueueConns <= 0 {
		cfg.QueueConns = 4 * cfg.MaxConns
	}
	if cfg.QueueWait <= 0 {
		cfg.QueueWait = 30 * time.Second
	}
	if cfg.HeaderTimeout <= 0 {
		cfg.HeaderTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 60 * time.Second
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = 64 << 10
	}
	if cfg.MaxHeaderBytes < 1024 {
		cfg.MaxHeaderBytes = 1024
	}
	if err := checkInspectConfig(&cfg); err != nil {
		return nil, err
	}
	gm, err := newGoModUpstreams(cfg.GoModUpstream, cfg.SumDBUpstream)
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		cfg:       cfg,
		log:       cfg.Logger.Named("egress").With("step", cfg.Step),
		rec:       cfg.Recorder,
		sum:       newSummary(),
		gomod:     gm,
		listeners: map[net.Listener]struct{}{},
		conns:     map[*clientConn]struct{}{},
		slots:     make(chan struct{}, cfg.MaxConns),
		stop:      make(chan struct{}),
	}
	p.transports.init(p)
	return p, nil
}

// Denials returns the distinct denials so far, sorted by target.
func (p *Proxy) Denials() []Denial { return p.sum.list() }

// WouldNeed returns, in audit mode, the sorted allowlist entries that
// enforce mode would have needed.
func (p *Proxy) WouldNeed() []string { return p.sum.needs() }

// Serve accepts connections on l until Shutdown or Close, then returns nil.
// It may be called for several listeners.
func (p *Proxy) Serve(l net.Listener) error {
	p.mu.Lock()
	if p.closing.Load() {
		p.mu.Unlock()
		return nil
	}
	p.listeners[l] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.listeners, l)
		p.mu.Unlock()
	}()

	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if p.closing.Load() {
				return nil
			}
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				// Out of file descriptors and the like: back off
				// rather than spin or give up.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				p.log.Warn("accept failed; retrying", "error", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		select {
		case p.slots <- struct{}{}:
			p.admit(c)
		default:
			p.enqueue(c)
		}
	}
}

// admit serves c, which holds a slot.
func (p *Proxy) admit(c net.Conn) {
	p.active.Add(1)
	cc := p.track(c)
	if cc == nil {
		p.release()
		c.Close()
		return
	}
	go p.serveConn(cc)
}

// release gives back the slot of a connection that has ended.
func (p *Proxy) release() {
	p.active.Add(-1)
	<-p.slots
}

// enqueue makes a connection that found every slot taken wait for one,
// in its own goroutine so that the accept loop keeps accepting: a busy
// build (parallel downloads) gets served late rather than failed. While
// it waits, connections idle on keep-alive for a moment are closed to
// free their slots (a client reopens one when it needs it). A full queue,
// or a wait past QueueWait, is answered 503.
func (p *Proxy) enqueue(c net.Conn) {
	if p.waiting.Add(1) > int64(p.cfg.QueueConns) {
		p.waiting.Add(-1)
		p.rejectBusy(c, fmt.Sprintf("and %d more are already waiting for one", p.cfg.QueueConns))
		return
	}
	go func() {
		defer p.waiting.Add(-1)
		timeout := time.NewTimer(p.cfg.QueueWait)
		defer timeout.Stop()
		tick := time.NewTicker(idleEvictTick)
		defer tick.Stop()
		p.evictIdle()
		for {
			select {
			case p.slots <- struct{}{}:
				p.admit(c)
				return
			case <-tick.C:
				p.evictIdle()
			case <-timeout.C:
				p.rejectBusy(c, fmt.Sprintf("none became free within %s", p.cfg.QueueWait))
				return
			case <-p.stop:
				c.Close()
				return
			}
		}
	}()
}

// A keep-alive connection idle for idleEvictAfter may be closed to make
// room for a waiting one; shorter gaps are a client between two requests
// of a burst, which closing would only make reconnect.
const (
	idleEvictAfter = 500 * time.Millisecond
	idleEvictTick  = 50 * time.Millisecond
)

// evictIdle closes one connection that has been idle long enough, if any.
func (p *Proxy) evictIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for cc := range p.conns {
		if cc.idleFor() >= idleEvictAfter && cc.state.CompareAndSwap(stateIdle, stateClosed) {
			cc.conn.Close()
			return
		}
	}
}

// rejectBusy answers a connection that could not get a slot with 503,
// saying why. The answer is written from its own short-lived goroutine so that a client
// that does not read cannot stall the accept loop; if too many of those
// are already in flight the connection is simply closed.
func (p *Proxy) rejectBusy(c net.Conn, why string) {
	p.record(Event{Time: time.Now(), Decision: DecisionDeny, Status: http.StatusServiceUnavailable,
		Reason: fmt.Sprintf("too many concurrent connections (limit %d; %s)", p.cfg.MaxConns, why)})
	if p.rejecting.Add(1) > int64(p.cfg.MaxConns) {
		p.rejecting.Add(-1)
		c.Close()
		return
	}
	go func() {
		defer p.rejecting.Add(-1)
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		msg := fmt.Sprintf("cleanroom: egress proxy of step %q is at its limit of %d concurrent connections, %s\n", p.cfg.Step, p.cfg.MaxConns, why)
		fmt.Fprintf(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(msg), msg)
		// Half-close and drain briefly so the client reads the 503
		// instead of a reset caused by its own unread request.
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		var buf [4096]byte
		for {
			if _, err := c.Read(buf[:]); err != nil {
				return
			}
		}
	}()
}

// Shutdown stops accepting, closes idle connections, waits for requests
// and tunnels in flight until ctx is done, and then force-closes whatever
// remains (returning ctx's error).
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.closing.Store(true)
	p.stopOnce.Do(func() { close(p.stop) })
	p.mu.Lock()
	for l := range p.listeners {
		l.Close()
	}
	p.mu.Unlock()

	defer p.transports.closeIdle()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if p.closeIdle() == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			p.forceCloseAll()
			// Give the connection goroutines a moment to unwind and
			// record their final events.
			deadline := time.Now().Add(2 * time.Second)
			for p.closeIdle() > 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Close force-closes the proxy at once.
func (p *Proxy) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// track registers a new client connection, or returns nil when shutting
// down.
func (p *Proxy) track(c net.Conn) *clientConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing.Load() {
		return nil
	}
	cc := newClientConn(p.connSeq.Add(1), c)
	p.conns[cc] = struct{}{}
	return cc
}

func (p *Proxy) untrack(cc *clientConn) {
	p.mu.Lock()
	delete(p.conns, cc)
	p.mu.Unlock()
	p.release()
}

// closeIdle closes idle connections and returns how many remain.
func (p *Proxy) closeIdle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for cc := range p.conns {
		cc.closeIfIdle()
	}
	return len(p.conns)
}

func (p *Proxy) forceCloseAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for cc := range p.conns {
		cc.forceClose()
	}
}

// record stamps and delivers an event, and feeds the run summary.
func (p *Proxy) record(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Step = p.cfg.Step
	if e.DurationMS == 0 {
		e.DurationMS = time.Since(e.Time).Milliseconds()
	}
	switch e.Decision {
	case DecisionDeny:
		// Debug, not Warn: every denial is an event, and the caller (the
		// runner) warns once per distinct destination, so a step that
		// retries in a loop cannot flood the log.
		p.log.Debug("egress denied", "method", e.Method, "host", e.Host, "port", e.Port, "status", e.Status, "reason", e.Reason)
	case DecisionAuditAllow:
		p.log.Info("egress allowed by audit mode", "host", e.Host, "port", e.Port, "reason", e.Reason)
	default:
		p.log.Debug("egress", "method", e.Method, "url", e.URL, "addr", e.Addr, "status", e.Status, "bytes_in", e.BytesIn)
	}
	p.rec.Record(e)
}

// noteDecision feeds a policy decision into the run summary.
func (p *Proxy) noteDecision(host string, port int, d Decision) {
	switch {
	case !d.Allowed:
		target := ""
		if host != "" {
			target = hostPort(host, port)
		}
		p.sum.deny(target, d.Hint, d.Reason)
	case d.Audit:
		p.sum.need(d.Hint)
	}
}

// decisionString maps a Decision to the event vocabulary.
func decisionString(d Decision) string {
	switch {
	case !d.Allowed:
		return DecisionDeny
	case d.Audit:
		return DecisionAuditAllow
	}
	return DecisionAllow
}
