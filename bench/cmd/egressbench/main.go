// Command egressbench measures cleanroom's egress proxy against a direct
// connection and against another proxy, each side in its own process, on
// loopback only.
//
//	egressbench upstream -addr-file F [-tls-addr-file F -ca-file F]   loopback origin: /bytes?n=N, /small (and over HTTPS)
//	egressbench proxy -addr-file F -allow RULE...       cleanroom's proxy (sandbox/egress), as the runner configures it
//	egressbench throughput -upstream A [-ca F] -bytes N -rounds R -o FILE NAME=PROXYADDR...  (-ca: https, CONNECT tunnels)
//	egressbench latency -upstream A -concurrency C -per-worker K -rounds R -o FILE NAME=PROXYADDR...
//	egressbench rss -pid P -upstream A -proxy A -bytes N -o FILE
//	egressbench freeport                               print a free loopback port
//	egressbench probe [-proxy A] -url U                 wait until U answers 200
//
// The servers write their listening address to -addr-file once they
// accept, and run until SIGTERM/SIGINT. The measuring modes interleave
// their cases round by round (A B A B …, starting case rotated) and print
// or write JSON; any failed transfer is an error, never a number.
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cleanroom-ci/cleanroom/bench/internal/stats"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	args := os.Args[2:]
	switch os.Args[1] {
	case "upstream":
		err = upstreamCmd(args)
	case "proxy":
		err = proxyCmd(args)
	case "throughput":
		err = throughputCmd(args)
	case "latency":
		err = latencyCmd(args)
	case "rss":
		err = rssCmd(args)
	case "freeport":
		err = freeportCmd()
	case "probe":
		err = probeCmd(args)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "egressbench:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: egressbench upstream|proxy|throughput|latency|rss|freeport|probe [flags]")
	os.Exit(2)
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

// listen opens a loopback listener and publishes its address.
func listen(addrFile string) (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	if addrFile != "" {
		tmp := addrFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(ln.Addr().String()+"\n"), 0o644); err != nil {
			return nil, err
		}
		if err := os.Rename(tmp, addrFile); err != nil {
			return nil, err
		}
	}
	return ln, nil
}

func untilSignal() context.Context {
	ctx, _ := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	return ctx
}

// upstreamCmd is the origin server: /bytes?n=N streams N bytes from one
// fixed buffer; /small answers a small fixed body.
func upstreamCmd(args []string) error {
	fs := flag.NewFlagSet("upstream", flag.ExitOnError)
	addrFile := fs.String("addr-file", "", "write the listening address here")
	tlsAddrFile := fs.String("tls-addr-file", "", "also serve HTTPS (for CONNECT tunnels) and write its address here")
	caFile := fs.String("ca-file", "", "with -tls-addr-file: write the server's self-signed certificate (PEM) here")
	smallSize := fs.Int("small", 1024, "bytes of the /small body")
	fs.Parse(args)
	chunk := make([]byte, 256<<10)
	for i := range chunk {
		chunk[i] = byte(i * 7)
	}
	small := chunk[:*smallSize]
	mux := http.NewServeMux()
	mux.HandleFunc("/bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "want ?n=BYTES", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		for n > 0 {
			k := min(n, int64(len(chunk)))
			if _, err := w.Write(chunk[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	mux.HandleFunc("/small", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(small)))
		w.Write(small)
	})
	ln, err := listen(*addrFile)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second}
	tsrv := &http.Server{Handler: mux, ReadHeaderTimeout: 30 * time.Second,
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}} // HTTP/1.1, as through a proxy
	go func() {
		<-untilSignal().Done()
		srv.Close()
		tsrv.Close()
	}()
	if *tlsAddrFile != "" {
		cert, err := selfSigned(*caFile)
		if err != nil {
			return err
		}
		tln, err := listen(*tlsAddrFile)
		if err != nil {
			return err
		}
		tsrv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		go func() {
			if err := tsrv.ServeTLS(tln, "", ""); !errors.Is(err, http.ErrServerClosed) {
				log.Fatal(err)
			}
		}()
	}
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// selfSigned makes a certificate for 127.0.0.1 and writes it to caFile,
// for the clients to trust.
func selfSigned(caFile string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "egressbench"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	if caFile != "" {
		if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
			return tls.Certificate{}, err
		}
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// proxyCmd serves cleanroom's egress proxy the way runner.Sandboxed sets
// it up (enforce mode, a JSONL recorder writing every event to a file),
// but on a host loopback listener instead of one inside a step's network
// namespace.
func proxyCmd(args []string) error {
	fs := flag.NewFlagSet("proxy", flag.ExitOnError)
	addrFile := fs.String("addr-file", "", "write the listening address here")
	events := fs.String("events", "", "egress.jsonl to write (default: discard)")
	maxConns := fs.Int("max-conns", 0, "MaxConns (0: the package default, which the runner uses)")
	var allow multiFlag
	fs.Var(&allow, "allow", "allowlist rule (repeatable)")
	fs.Parse(args)
	pol, err := egress.NewPolicy(allow)
	if err != nil {
		return err
	}
	var w io.Writer = io.Discard
	if *events != "" {
		f, err := os.Create(*events)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	p, err := egress.New(egress.Config{
		Step:     "bench",
		Policy:   pol,
		Mode:     egress.Enforce,
		Recorder: egress.NewJSONLRecorder(w),
		MaxConns: *maxConns,
	})
	if err != nil {
		return err
	}
	ln, err := listen(*addrFile)
	if err != nil {
		return err
	}
	go func() {
		<-untilSignal().Done()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	}()
	return p.Serve(ln)
}

func proxyClient(proxyAddr string) *http.Client { return proxyClientTLS(proxyAddr, nil) }

// proxyClientTLS is proxyClient trusting roots for https URLs, which it
// fetches through the proxy with CONNECT.
func proxyClientTLS(proxyAddr string, roots *x509.CertPool) *http.Client {
	tr := &http.Transport{
		DisableCompression:  true,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
		ForceAttemptHTTP2:   false,
		TLSClientConfig:     &tls.Config{RootCAs: roots},
	}
	if proxyAddr != "" {
		u := &url.URL{Scheme: "http", Host: proxyAddr}
		tr.Proxy = http.ProxyURL(u)
	}
	return &http.Client{Transport: tr}
}

// fetch downloads url and checks that exactly want bytes came with a 200.
func fetch(c *http.Client, u string, want int64, buf []byte) error {
	resp, err := c.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s: %s", u, resp.Status, strings.TrimSpace(string(b)))
	}
	var n int64
	for {
		k, err := resp.Body.Read(buf)
		n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: after %d bytes: %w", u, n, err)
		}
	}
	if want >= 0 && n != want {
		return fmt.Errorf("%s: got %d bytes, want %d", u, n, want)
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if path == "" {
		_, err = os.Stdout.Write(b)
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// ThroughputCase is one path to the origin: "direct" or through a proxy.
type ThroughputCase struct {
	Name  string        `json:"name"`
	Proxy string        `json:"proxy,omitempty"`
	MiBs  []float64     `json:"mibPerS"` // per round
	Stats stats.Summary `json:"stats"`
	// Ratio is this case's per-round throughput over direct's.
	RatioSamples []float64     `json:"ratioSamples,omitempty"`
	Ratio        stats.Summary `json:"ratio"`
}

// ThroughputResult compares one large body fetched directly and through
// proxies, interleaved round by round.
type ThroughputResult struct {
	Bytes  int64             `json:"bytes"`
	Rounds int               `json:"rounds"`
	Cases  []*ThroughputCase `json:"cases"`
	// SHA256 is SHA-256 alone over the same number of bytes in memory on
	// one core, once per round: the ceiling for a proxy that hashes
	// every body on its forwarding path.
	SHA256MiBs []float64     `json:"sha256MibPerS"`
	SHA256     stats.Summary `json:"sha256"`
}

func throughputCmd(args []string) error {
	fs := flag.NewFlagSet("throughput", flag.ExitOnError)
	upstream := fs.String("upstream", "", "origin host:port")
	size := fs.Int64("bytes", 1<<30, "body size")
	rounds := fs.Int("rounds", 3, "interleaved rounds")
	out := fs.String("o", "", "JSON output (default stdout)")
	caFile := fs.String("ca", "", "fetch https:// from -upstream (CONNECT tunnels through the proxies), trusting this certificate")
	fs.Parse(args)
	if *upstream == "" || fs.NArg() == 0 {
		return errors.New("throughput: need -upstream and NAME=PROXYADDR cases")
	}
	scheme := "http"
	var roots *x509.CertPool
	if *caFile != "" {
		pemBytes, err := os.ReadFile(*caFile)
		if err != nil {
			return err
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pemBytes) {
			return fmt.Errorf("%s: no certificate", *caFile)
		}
		scheme = "https"
	}
	res := ThroughputResult{Bytes: *size, Rounds: *rounds, Cases: []*ThroughputCase{{Name: "direct"}}}
	for _, a := range fs.Args() {
		name, addr, ok := strings.Cut(a, "=")
		if !ok || name == "direct" {
			return fmt.Errorf("case %q: want NAME=HOST:PORT (NAME not \"direct\")", a)
		}
		res.Cases = append(res.Cases, &ThroughputCase{Name: name, Proxy: addr})
	}
	u := fmt.Sprintf("%s://%s/bytes?n=%d", scheme, *upstream, *size)
	clients := map[string]*http.Client{}
	buf := make([]byte, 256<<10)
	for _, c := range res.Cases {
		clients[c.Name] = proxyClientTLS(c.Proxy, roots)
		// Warm up every path (connections, page faults) with a smaller body.
		if err := fetch(clients[c.Name], fmt.Sprintf("%s://%s/bytes?n=%d", scheme, *upstream, 64<<20), 64<<20, buf); err != nil {
			return fmt.Errorf("%s: %w", c.Name, err)
		}
	}
	n := len(res.Cases)
	for r := range *rounds {
		for k := range n {
			c := res.Cases[(k+r)%n]
			start := time.Now()
			if err := fetch(clients[c.Name], u, *size, buf); err != nil {
				return fmt.Errorf("%s: %w", c.Name, err)
			}
			mibs := float64(*size) / (1 << 20) / time.Since(start).Seconds()
			fmt.Fprintf(os.Stderr, "  r%d %-10s %8.0f MiB/s\n", r, c.Name, mibs)
			c.MiBs = append(c.MiBs, mibs)
		}
		h := sha256.New()
		start := time.Now()
		for left := *size; left > 0; left -= int64(len(buf)) {
			h.Write(buf[:min(left, int64(len(buf)))])
		}
		h.Sum(nil)
		mibs := float64(*size) / (1 << 20) / time.Since(start).Seconds()
		fmt.Fprintf(os.Stderr, "  r%d %-10s %8.0f MiB/s\n", r, "sha256", mibs)
		res.SHA256MiBs = append(res.SHA256MiBs, mibs)
	}
	res.SHA256 = stats.Summarize(res.SHA256MiBs)
	direct := res.Cases[0]
	for _, c := range res.Cases {
		c.Stats = stats.Summarize(c.MiBs)
		if c != direct {
			c.RatioSamples = stats.Ratios(c.MiBs, direct.MiBs)
			c.Ratio = stats.Summarize(c.RatioSamples)
		}
	}
	return writeJSON(*out, res)
}

// freeportCmd prints a loopback TCP port that was free a moment ago, for
// a server (squid) that must be told its port in its configuration.
func freeportCmd() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	return nil
}

// probeCmd waits until a fetch of -url (through -proxy, if given) answers
// 200, or fails after -timeout.
func probeCmd(args []string) error {
	fs := flag.NewFlagSet("probe", flag.ExitOnError)
	proxy := fs.String("proxy", "", "proxy host:port")
	u := fs.String("url", "", "URL to fetch")
	timeout := fs.Duration("timeout", 20*time.Second, "give up after")
	fs.Parse(args)
	c := proxyClient(*proxy)
	c.Timeout = 2 * time.Second
	deadline := time.Now().Add(*timeout)
	buf := make([]byte, 4096)
	for {
		err := fetch(c, *u, -1, buf)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("probe %s via %q: %w", *u, *proxy, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// LatencyCase is one proxy under concurrent small fetches.
type LatencyCase struct {
	Name   string    `json:"name"`
	Proxy  string    `json:"proxy"`
	P50MS  []float64 `json:"p50Ms"` // per round
	P99MS  []float64 `json:"p99Ms"`
	MaxMS  []float64 `json:"maxMs"`
	ReqPS  []float64 `json:"reqPerS"`
	Errors []int     `json:"errors"`
	// FirstError is an example of what failed, if anything did.
	FirstError string        `json:"firstError,omitempty"`
	P50        stats.Summary `json:"p50"`
	P99        stats.Summary `json:"p99"`
	Max        stats.Summary `json:"max"`
	Throughput stats.Summary `json:"throughput"`
}

// LatencyResult compares proxies under the same concurrent load.
type LatencyResult struct {
	Concurrency int            `json:"concurrency"`
	PerWorker   int            `json:"perWorker"`
	Rounds      int            `json:"rounds"`
	Cases       []*LatencyCase `json:"cases"`
	// P99Ratios are per-round p99(case)/p99(first case).
	P99Ratios map[string][]float64     `json:"p99Ratios"`
	P99Ratio  map[string]stats.Summary `json:"p99Ratio"`
	P50Ratio  map[string]stats.Summary `json:"p50Ratio"`
}

func latencyCmd(args []string) error {
	fs := flag.NewFlagSet("latency", flag.ExitOnError)
	upstream := fs.String("upstream", "", "origin host:port")
	conc := fs.Int("concurrency", 500, "concurrent clients, each with its own connection")
	per := fs.Int("per-worker", 10, "sequential fetches per client per round")
	rounds := fs.Int("rounds", 5, "interleaved rounds")
	small := fs.Int64("small", 1024, "expected body size of /small")
	allowErrors := fs.Bool("allow-errors", false, "count failed fetches instead of stopping")
	out := fs.String("o", "", "JSON output (default stdout)")
	fs.Parse(args)
	if *upstream == "" || fs.NArg() == 0 {
		return errors.New("latency: need -upstream and NAME=PROXYADDR cases")
	}
	if *allowErrors {
		// net/http logs every 503 that a rejecting proxy sends on a
		// connection it considers idle; the errors are counted instead.
		log.SetOutput(io.Discard)
	}
	res := LatencyResult{Concurrency: *conc, PerWorker: *per, Rounds: *rounds,
		P99Ratios: map[string][]float64{}, P99Ratio: map[string]stats.Summary{}, P50Ratio: map[string]stats.Summary{}}
	for _, a := range fs.Args() {
		name, addr, ok := strings.Cut(a, "=")
		if !ok {
			return fmt.Errorf("case %q: want NAME=HOST:PORT", a)
		}
		res.Cases = append(res.Cases, &LatencyCase{Name: name, Proxy: addr})
	}
	u := fmt.Sprintf("http://%s/small", *upstream)
	n := len(res.Cases)
	for r := -1; r < *rounds; r++ { // round -1 warms up every case
		for k := range n {
			c := res.Cases[(k+max(r, 0))%n]
			lat, errs, firstErr, wall := loadRound(c.Proxy, u, *conc, *per, *small)
			if errs > 0 && c.FirstError == "" {
				c.FirstError = firstErr
			}
			if errs > 0 && !*allowErrors {
				return fmt.Errorf("%s: %d of %d fetches failed, e.g. %s", c.Name, errs, *conc**per, firstErr)
			}
			if len(lat) == 0 {
				return fmt.Errorf("%s: every fetch failed, e.g. %s", c.Name, firstErr)
			}
			sort.Float64s(lat)
			p50, p99, mx := stats.Quantile(lat, 0.5), stats.Quantile(lat, 0.99), lat[len(lat)-1]
			fmt.Fprintf(os.Stderr, "  r%-2d %-10s p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms  %6.0f req/s  errors %d\n",
				r, c.Name, p50, p99, mx, float64(len(lat))/wall.Seconds(), errs)
			if r < 0 {
				continue
			}
			c.P50MS = append(c.P50MS, p50)
			c.P99MS = append(c.P99MS, p99)
			c.MaxMS = append(c.MaxMS, mx)
			c.ReqPS = append(c.ReqPS, float64(len(lat))/wall.Seconds())
			c.Errors = append(c.Errors, errs)
		}
	}
	for _, c := range res.Cases {
		c.P50, c.P99, c.Max, c.Throughput = stats.Summarize(c.P50MS), stats.Summarize(c.P99MS), stats.Summarize(c.MaxMS), stats.Summarize(c.ReqPS)
	}
	base := res.Cases[0]
	for _, c := range res.Cases[1:] {
		key := base.Name + "/" + c.Name
		res.P99Ratios[key] = stats.Ratios(base.P99MS, c.P99MS)
		res.P99Ratio[key] = stats.Summarize(res.P99Ratios[key])
		res.P50Ratio[key] = stats.Summarize(stats.Ratios(base.P50MS, c.P50MS))
	}
	return writeJSON(*out, res)
}

// loadRound starts conc clients at once; each opens its own connection to
// the proxy and makes per sequential fetches on it. It returns every
// successful fetch's latency in ms.
func loadRound(proxy, u string, conc, per int, want int64) (lat []float64, errs int, firstErr string, wall time.Duration) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	ready := make(chan struct{})
	lat = make([]float64, 0, conc*per)
	var start time.Time
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := proxyClient(proxy)
			defer c.CloseIdleConnections()
			c.Timeout = 60 * time.Second
			buf := make([]byte, 4096)
			mine := make([]float64, 0, per)
			var myErrs int
			var myFirst string
			<-ready
			for range per {
				t0 := time.Now()
				if err := fetch(c, u, want, buf); err != nil {
					myErrs++
					if myFirst == "" {
						myFirst = err.Error()
					}
					continue
				}
				mine = append(mine, float64(time.Since(t0).Microseconds())/1000)
			}
			mu.Lock()
			lat = append(lat, mine...)
			errs += myErrs
			if firstErr == "" {
				firstErr = myFirst
			}
			mu.Unlock()
		}()
	}
	start = time.Now()
	close(ready)
	wg.Wait()
	return lat, errs, firstErr, time.Since(start)
}

// RSSResult is the proxy process's memory while it streams a large body.
type RSSResult struct {
	Bytes int64 `json:"bytes"`
	// IdleRSSKB is VmRSS before the transfer; PeakSampledKB the largest
	// VmRSS seen while sampling every 20 ms; VmHWMKB the kernel's
	// high-water mark for the process's whole life, read after the
	// transfer.
	IdleRSSKB     int64   `json:"idleRssKb"`
	PeakSampledKB int64   `json:"peakSampledKb"`
	VmHWMKB       int64   `json:"vmHwmKb"`
	MiBs          float64 `json:"mibPerS"`
}

func rssCmd(args []string) error {
	fs := flag.NewFlagSet("rss", flag.ExitOnError)
	pid := fs.Int("pid", 0, "proxy process id")
	upstream := fs.String("upstream", "", "origin host:port")
	proxy := fs.String("proxy", "", "proxy host:port")
	size := fs.Int64("bytes", 2<<30, "body size")
	out := fs.String("o", "", "JSON output (default stdout)")
	fs.Parse(args)
	if *pid == 0 || *upstream == "" || *proxy == "" {
		return errors.New("rss: need -pid, -upstream and -proxy")
	}
	idle, err := procStatus(*pid, "VmRSS")
	if err != nil {
		return err
	}
	res := RSSResult{Bytes: *size, IdleRSSKB: idle}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if v, err := procStatus(*pid, "VmRSS"); err == nil && v > res.PeakSampledKB {
				res.PeakSampledKB = v
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	start := time.Now()
	err = fetch(proxyClient(*proxy), fmt.Sprintf("http://%s/bytes?n=%d", *upstream, *size), *size, make([]byte, 256<<10))
	elapsed := time.Since(start)
	close(stop)
	<-done
	if err != nil {
		return err
	}
	res.MiBs = float64(*size) / (1 << 20) / elapsed.Seconds()
	if res.VmHWMKB, err = procStatus(*pid, "VmHWM"); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "  idle %d KiB, peak sampled %d KiB, VmHWM %d KiB, %.0f MiB/s\n", res.IdleRSSKB, res.PeakSampledKB, res.VmHWMKB, res.MiBs)
	return writeJSON(*out, res)
}

// procStatus reads a "kB" field of /proc/PID/status.
func procStatus(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && k == field {
			fields := strings.Fields(v)
			if len(fields) == 0 {
				break
			}
			return strconv.ParseInt(fields[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}
