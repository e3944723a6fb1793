package egress

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// inspectBenchSize is what the HTTPS throughput benchmarks move per
// iteration.
const inspectBenchSize = 256 << 20

// httpsBench runs one HTTPS download per iteration through a proxy, the
// client speaking HTTP/1.1 in both cases so that only the proxy differs:
// an opaque CONNECT splice (TLS end to end) or inspection (TLS terminated,
// body hashed, TLS again upstream), optionally also writing the store.
func httpsBench(b *testing.B, inspect, withStore bool) {
	up := benchUpstream(b)
	c, u := benchClient(b, up, inspect, withStore)
	b.SetBytes(inspectBenchSize)
	b.ResetTimer()
	for range b.N {
		benchFetch(b, c, u)
	}
	b.StopTimer()
	c.CloseIdleConnections()
}

// benchUpstream serves inspectBenchSize bytes over HTTPS.
func benchUpstream(b *testing.B) *httpsUpstream {
	chunk := make([]byte, 256<<10)
	for i := range chunk {
		chunk[i] = byte(i * 7)
	}
	return newTLSUpstream(b, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(inspectBenchSize))
		for sent := 0; sent < inspectBenchSize; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
}

// benchClient starts a proxy (tunnel or inspection, with or without the
// store) and returns an HTTP/1.1 client through it and the URL to fetch.
func benchClient(b *testing.B, up *httpsUpstream, inspect, withStore bool) (*http.Client, string) {
	pt := port(b, up.Server)
	rule := fmt.Sprintf("127.0.0.1:%d", pt)
	cfg := Config{TLSConfig: &tls.Config{RootCAs: up.roots}}
	roots := up.roots
	if inspect {
		ca := newTestCA(b, rule)
		cfg.Inspect = ca
		roots = caPool(ca)
	}
	if withStore {
		cfg.Store = openStore(b)
	}
	tp := startProxy(b, cfg, rule)
	c := &http.Client{Transport: &http.Transport{
		Proxy:           http.ProxyURL(tp.url),
		TLSClientConfig: &tls.Config{RootCAs: roots},
		TLSNextProto:    map[string]func(string, *tls.Conn) http.RoundTripper{},
	}}
	return c, fmt.Sprintf("https://127.0.0.1:%d/blob", pt)
}

func benchFetch(b *testing.B, c *http.Client, u string) {
	resp, err := c.Get(u)
	if err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != inspectBenchSize {
		b.Fatalf("read %d bytes: %v", n, err)
	}
}

// BenchmarkHTTPSTunnelThroughput: the baseline, an opaque CONNECT tunnel.
func BenchmarkHTTPSTunnelThroughput(b *testing.B) { httpsBench(b, false, false) }

// BenchmarkHTTPSInspectThroughput: the same download with TLS inspection.
func BenchmarkHTTPSInspectThroughput(b *testing.B) { httpsBench(b, true, false) }

// BenchmarkHTTPSInspectStoreThroughput: inspection plus writing every body
// to the content-addressed store.
func BenchmarkHTTPSInspectStoreThroughput(b *testing.B) { httpsBench(b, true, true) }

// BenchmarkHTTPSInspectVsTunnel measures the cost of inspection as a ratio
// within one run: each iteration downloads the same body through an
// opaque tunnel, through inspection, and through inspection with the
// store, alternating so that noise on a shared machine hits all three
// alike. It reports the throughput of each and the ratios to the tunnel.
func BenchmarkHTTPSInspectVsTunnel(b *testing.B) {
	up := benchUpstream(b)
	tunnel, tu := benchClient(b, up, false, false)
	inspect, iu := benchClient(b, up, true, false)
	stored, su := benchClient(b, up, true, true)
	var dt, di, ds time.Duration
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		benchFetch(b, tunnel, tu)
		t1 := time.Now()
		benchFetch(b, inspect, iu)
		t2 := time.Now()
		benchFetch(b, stored, su)
		t3 := time.Now()
		dt, di, ds = dt+t1.Sub(t0), di+t2.Sub(t1), ds+t3.Sub(t2)
	}
	b.StopTimer()
	mbps := func(d time.Duration) float64 { return float64(b.N) * inspectBenchSize / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(dt), "tunnel-MB/s")
	b.ReportMetric(mbps(di), "inspect-MB/s")
	b.ReportMetric(mbps(ds), "inspect+store-MB/s")
	b.ReportMetric(dt.Seconds()/di.Seconds(), "inspect/tunnel")
	b.ReportMetric(dt.Seconds()/ds.Seconds(), "inspect+store/tunnel")
	for _, c := range []*http.Client{tunnel, inspect, stored} {
		c.CloseIdleConnections()
	}
}
