package egress

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"
)

var loopback4 = netip.MustParseAddr("127.0.0.1")

// dialLog records every dial the proxy makes and refuses (and fails the
// test on) any address outside loopback: tests must never send traffic
// anywhere else, and denied requests must be refused before dialing.
type dialLog struct {
	t     testing.TB
	mu    sync.Mutex
	addrs []netip.AddrPort
}

func (d *dialLog) dial(ctx context.Context, network string, ap netip.AddrPort) (net.Conn, error) {
	d.mu.Lock()
	d.addrs = append(d.addrs, ap)
	d.mu.Unlock()
	if !ap.Addr().IsLoopback() {
		d.t.Errorf("proxy tried to dial non-loopback address %s", ap)
		return nil, errors.New("test: non-loopback dial refused")
	}
	var nd net.Dialer
	return nd.DialContext(ctx, network, ap.String())
}

func (d *dialLog) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.addrs)
}

// fakeResolver resolves only the names in m; everything else fails, so a
// test can never leak a DNS query either.
func fakeResolver(m map[string][]netip.Addr) func(context.Context, string) ([]netip.Addr, error) {
	return func(_ context.Context, host string) ([]netip.Addr, error) {
		if a, ok := m[host]; ok {
			return a, nil
		}
		return nil, fmt.Errorf("test resolver: no such host %q", host)
	}
}

type testProxy struct {
	*Proxy
	addr  string
	url   *url.URL
	rec   *JSONLRecorder
	dials *dialLog
}

// startProxy serves a proxy on 127.0.0.1 with a loopback-only dialer and,
// unless cfg sets one, a resolver that maps *.test names to 127.0.0.1.
func startProxy(t testing.TB, cfg Config, rules ...string) *testProxy {
	t.Helper()
	if cfg.Policy == nil {
		pol, err := NewPolicy(rules)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Policy = pol
	}
	if cfg.Step == "" {
		cfg.Step = "build"
	}
	rec := NewJSONLRecorder(io.Discard)
	if cfg.Recorder == nil {
		cfg.Recorder = rec
	} else {
		cfg.Recorder = MultiRecorder{cfg.Recorder, rec}
	}
	dl := &dialLog{t: t}
	cfg.Dial = dl.dial
	if cfg.Resolve == nil {
		cfg.Resolve = fakeResolver(map[string][]netip.Addr{
			"deps.test":    {loopback4},
			"other.test":   {loopback4},
			"example.com":  {loopback4},
			"mirror.test":  {loopback4},
			"cdn.test":     {loopback4},
			"nothing.test": {},
		})
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve returned %v after Shutdown", err)
		}
	})
	u, _ := url.Parse("http://" + l.Addr().String())
	return &testProxy{Proxy: p, addr: l.Addr().String(), url: u, rec: rec, dials: dl}
}

// client returns an HTTP client that uses the proxy for everything.
func (tp *testProxy) client(roots *x509.CertPool) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:             http.ProxyURL(tp.url),
			TLSClientConfig:   &tls.Config{RootCAs: roots},
			DisableKeepAlives: false,
		},
		Timeout: 20 * time.Second,
	}
}

// events returns the recorded events, waiting briefly for the one that
// completes a request (it is recorded after the response is written).
func (tp *testProxy) waitEvents(t testing.TB, n int) []Event {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ev := tp.rec.Events()
		if len(ev) >= n || time.Now().After(deadline) {
			if len(ev) < n {
				t.Fatalf("got %d events, want %d: %+v", len(ev), n, ev)
			}
			return ev
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// port returns the port of a httptest server.
func port(t testing.TB, s *httptest.Server) int {
	t.Helper()
	u, _ := url.Parse(s.URL)
	n, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// rawExchange writes raw bytes to the proxy and reads one response.
func rawExchange(t testing.TB, addr, raw string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

// countingServer is an upstream that counts the requests it sees.
type countingServer struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []*http.Request
}

func newCountingServer(t testing.TB, h http.HandlerFunc) *countingServer {
	cs := &countingServer{}
	cs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cs.mu.Lock()
		cs.reqs = append(cs.reqs, r)
		cs.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(cs.Close)
	return cs
}

func (cs *countingServer) count() int {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return len(cs.reqs)
}

func newBufReader(r io.Reader) *bufio.Reader { return bufio.NewReader(r) }

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// byConn orders events by connection: a completed request is recorded
// after its response is written, so across connections the recorder may
// see them in a different order than the client sent them.
func byConn(evs []Event) []Event {
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Conn < evs[j].Conn })
	return evs
}
