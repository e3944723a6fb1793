package egress

import (
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// benchBodySize is what the throughput benchmarks move per iteration.
const benchBodySize = 1 << 30

// streamServer serves benchBodySize bytes from one fixed buffer.
func streamServer(b *testing.B) *countingServer {
	chunk := make([]byte, 256<<10)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	return newCountingServer(b, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(benchBodySize))
		for sent := 0; sent < benchBodySize; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
}

// heapSampler records the peak HeapInuse while a benchmark runs, to show
// that streaming a body does not buffer it.
type heapSampler struct {
	peak atomic.Uint64
	stop chan struct{}
	done chan struct{}
}

func sampleHeap() *heapSampler {
	runtime.GC()
	h := &heapSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		var ms runtime.MemStats
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > h.peak.Load() {
				h.peak.Store(ms.HeapInuse)
			}
			select {
			case <-h.stop:
				return
			case <-t.C:
			}
		}
	}()
	return h
}

func (h *heapSampler) report(b *testing.B) {
	close(h.stop)
	<-h.done
	b.ReportMetric(float64(h.peak.Load())/(1<<20), "peak-heap-MiB")
}

func fetchAll(b *testing.B, c *http.Client, url string) {
	resp, err := c.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != benchBodySize {
		b.Fatalf("read %d bytes: %v", n, err)
	}
}

// BenchmarkProxyThroughput streams 1 GiB per iteration through the proxy
// (plain HTTP, hashed on the way) and reports the peak heap in use.
func BenchmarkProxyThroughput(b *testing.B) {
	up := streamServer(b)
	pt := port(b, up.Server)
	tp := startProxy(b, Config{}, fmt.Sprintf("deps.test:%d", pt), fmt.Sprintf("127.0.0.1:%d", pt))
	c := tp.client(nil)
	c.Timeout = 0
	url := fmt.Sprintf("http://deps.test:%d/blob", pt)
	b.SetBytes(benchBodySize)
	h := sampleHeap()
	b.ResetTimer()
	for range b.N {
		fetchAll(b, c, url)
	}
	b.StopTimer()
	h.report(b)
}

// BenchmarkDirectThroughput is the same transfer without the proxy.
func BenchmarkDirectThroughput(b *testing.B) {
	up := streamServer(b)
	c := &http.Client{Transport: &http.Transport{}}
	b.SetBytes(benchBodySize)
	h := sampleHeap()
	b.ResetTimer()
	for range b.N {
		fetchAll(b, c, up.URL+"/blob")
	}
	b.StopTimer()
	h.report(b)
}

func benchPolicy(b *testing.B) *Policy {
	var rules []string
	for i := range 100 {
		rules = append(rules, fmt.Sprintf("host%d.example.com", i), fmt.Sprintf("*.zone%d.example.org:8443", i))
	}
	rules = append(rules, "10.0.0.0/8", "[fd00::/8]:443", "127.0.0.1:8080")
	p, err := NewPolicy(rules)
	if err != nil {
		b.Fatal(err)
	}
	return p
}

func BenchmarkDecideName(b *testing.B) {
	p := benchPolicy(b)
	addrs := []netip.Addr{netip.MustParseAddr("93.184.216.34")}
	for range b.N {
		if !p.Decide("host57.example.com", 443, addrs).Allowed {
			b.Fatal("denied")
		}
	}
}

func BenchmarkDecideWildcard(b *testing.B) {
	p := benchPolicy(b)
	addrs := []netip.Addr{netip.MustParseAddr("93.184.216.34")}
	for range b.N {
		if !p.Decide("a.b.c.zone99.example.org", 8443, addrs).Allowed {
			b.Fatal("denied")
		}
	}
}

func BenchmarkDecideDenied(b *testing.B) {
	p := benchPolicy(b)
	for range b.N {
		if p.Decide("unlisted.example.net", 443, nil).Allowed {
			b.Fatal("allowed")
		}
	}
}

func BenchmarkClassify(b *testing.B) {
	as := []netip.Addr{
		netip.MustParseAddr("93.184.216.34"),
		netip.MustParseAddr("169.254.169.254"),
		netip.MustParseAddr("2606:2800:220:1::1"),
		netip.MustParseAddr("::ffff:10.0.0.1"),
	}
	for i := range b.N {
		_ = Classify(as[i%len(as)])
	}
}

func BenchmarkNormalizeHost(b *testing.B) {
	hosts := []string{"Deps.Example.COM.", "2130706433", "bücher.example", "[::ffff:127.0.0.1]"}
	for i := range b.N {
		if _, _, _, err := NormalizeHost(hosts[i%len(hosts)]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRecord(b *testing.B) {
	r := NewJSONLRecorder(io.Discard)
	ev := Event{
		Time: time.Now(), Step: "build", Conn: 1, Method: "GET", Scheme: "http", Host: "deps.example.com", Port: 443,
		Addr: "93.184.216.34:443", URL: "http://deps.example.com/pkg.tar.gz", Status: 200, BytesIn: 1 << 20,
		SHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", Size: 1 << 20, Decision: DecisionAllow, Rule: "deps.example.com",
	}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.Record(ev)
		}
	})
}
