package egress

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/sandbox/egress/store"
)

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// httpsUpstream is an HTTPS server on loopback with its own test CA, and
// the pool that trusts it (what --upstream-ca gives the runner).
type httpsUpstream struct {
	*httptest.Server
	roots *x509.CertPool
	hits  atomic.Int64
}

func newTLSUpstream(t testing.TB, h http.HandlerFunc) *httpsUpstream {
	u := &httpsUpstream{}
	u.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		h(w, r)
	}))
	u.EnableHTTP2 = true
	u.StartTLS()
	t.Cleanup(u.Close)
	u.roots = x509.NewCertPool()
	u.roots.AddCert(u.Certificate())
	return u
}

func newTestCA(t testing.TB, rules ...string) *InspectCA {
	t.Helper()
	ca, err := NewInspectCA(InspectCAOptions{Rules: rules, Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func caPool(ca *InspectCA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Certificate())
	return p
}

// inspectingClient is a step's client: proxy from the environment, trust
// in the run's CA only; h2 selects whether it offers HTTP/2.
func inspectingClient(tp *testProxy, ca *InspectCA, h2 bool) *http.Client {
	tr := &http.Transport{
		Proxy:             http.ProxyURL(tp.url),
		TLSClientConfig:   &tls.Config{RootCAs: caPool(ca)},
		ForceAttemptHTTP2: h2,
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

func TestInspectRecordsHTTPSBodyHTTP1AndHTTP2(t *testing.T) {
	body := bytes.Repeat([]byte("https dependency\n"), 10000)
	up := newTLSUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/pkg/dep.tar" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/x-tar")
		w.Write(body)
	})
	pt := port(t, up.Server)
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			ca := newTestCA(t, fmt.Sprintf("example.com:%d", pt), fmt.Sprintf("127.0.0.1:%d", pt))
			tp := startProxy(t, Config{Inspect: ca, TLSConfig: &tls.Config{RootCAs: up.roots}},
				fmt.Sprintf("example.com:%d", pt), fmt.Sprintf("127.0.0.1:%d", pt))
			c := inspectingClient(tp, ca, h2)
			for _, host := range []string{"example.com", "127.0.0.1"} {
				u := fmt.Sprintf("https://%s:%d/pkg/dep.tar?x=1", host, pt)
				resp, err := c.Get(u)
				if err != nil {
					t.Fatal(err)
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if !bytes.Equal(got, body) || resp.StatusCode != 200 {
					t.Fatalf("%s: status %d, %d bytes", u, resp.StatusCode, len(got))
				}
				if wantProto := map[bool]int{false: 1, true: 2}[h2]; resp.ProtoMajor != wantProto {
					t.Fatalf("client spoke HTTP/%d, want %d", resp.ProtoMajor, wantProto)
				}
				if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 || resp.TLS.PeerCertificates[0].Issuer.CommonName != ca.Certificate().Subject.CommonName {
					t.Fatalf("the step did not get the inspection leaf: %+v", resp.TLS)
				}
			}
			c.CloseIdleConnections()
			evs := tp.waitEvents(t, 4)
			var gets, tunnels int
			for _, e := range evs {
				switch e.Method {
				case "GET":
					gets++
					if e.Scheme != "https" || !strings.HasSuffix(e.URL, fmt.Sprintf(":%d/pkg/dep.tar?x=1", pt)) || !strings.HasPrefix(e.URL, "https://") ||
						e.SHA256 != hexSum(body) || e.Size != int64(len(body)) || e.Status != 200 || e.Decision != DecisionAllow {
						t.Fatalf("request event %+v", e)
					}
				case "CONNECT":
					tunnels++
					if !e.Inspected || e.Status != 200 || e.BytesIn < int64(len(body)) {
						t.Fatalf("tunnel event %+v", e)
					}
				}
			}
			if gets != 2 || tunnels != 2 {
				t.Fatalf("%d request events, %d tunnel events: %+v", gets, tunnels, evs)
			}
		})
	}
}

// A client that does not trust the run's CA (it pins, or brings its own
// bundle) gets no tunnel: the refusal is a denial with a hint, and nothing
// reaches the upstream.
func TestInspectPinnedClientFailsLoudly(t *testing.T) {
	up := newTLSUpstream(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("secret")) })
	pt := port(t, up.Server)
	rule := fmt.Sprintf("127.0.0.1:%d", pt)
	ca := newTestCA(t, rule)
	tp := startProxy(t, Config{Inspect: ca, TLSConfig: &tls.Config{RootCAs: up.roots}}, rule)
	c := tp.client(up.roots) // trusts the real upstream only: a pinning client
	_, err := c.Get(fmt.Sprintf("https://127.0.0.1:%d/", pt))
	if err == nil {
		t.Fatal("a client that does not trust the inspection CA got through")
	}
	evs := tp.waitEvents(t, 1)
	e := evs[len(evs)-1]
	if e.Decision != DecisionDeny || !strings.Contains(e.Reason, "inspection") || !strings.Contains(e.Reason, "no unrecorded tunnel") {
		t.Fatalf("event %+v", e)
	}
	if up.hits.Load() != 0 {
		t.Fatal("the upstream was contacted")
	}
	if d := tp.Denials(); len(d) != 1 || !strings.Contains(d[0].Reason, "does not trust") {
		t.Fatalf("denials %+v", d)
	}
}

// The upstream is verified normally: without its CA the request fails
// with 502 and says why.
func TestInspectVerifiesUpstream(t *testing.T) {
	up := newTLSUpstream(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("x")) })
	pt := port(t, up.Server)
	rule := fmt.Sprintf("127.0.0.1:%d", pt)
	ca := newTestCA(t, rule)
	tp := startProxy(t, Config{Inspect: ca, TLSConfig: &tls.Config{RootCAs: x509.NewCertPool()}}, rule)
	resp, err := inspectingClient(tp, ca, false).Get(fmt.Sprintf("https://127.0.0.1:%d/", pt))
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(msg), "certificate") {
		t.Fatalf("status %d: %s", resp.StatusCode, msg)
	}
	evs := tp.waitEvents(t, 1)
	if evs[0].Status != 502 || !strings.Contains(evs[0].Reason, "upstream certificate not trusted") {
		t.Fatalf("event %+v", evs[0])
	}
}

// A request inside the tunnel for a host other than the tunnel's is
// refused: policy and certificate were for the tunnel's host.
func TestInspectMisdirectedRequestRefused(t *testing.T) {
	up := newTLSUpstream(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("x")) })
	pt := port(t, up.Server)
	rule := fmt.Sprintf("127.0.0.1:%d", pt)
	ca := newTestCA(t, rule)
	tp := startProxy(t, Config{Inspect: ca, TLSConfig: &tls.Config{RootCAs: up.roots}}, rule)
	c, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", pt, pt)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	tc := tls.Client(&readerConn{Conn: c, r: br}, &tls.Config{ServerName: "127.0.0.1", RootCAs: caPool(ca)})
	fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: other.test\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if up.hits.Load() != 0 {
		t.Fatal("misdirected request reached upstream")
	}
}

type readerConn struct {
	net.Conn
	r io.Reader
}

func (c *readerConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func TestInspectCANameConstraints(t *testing.T) {
	ca := newTestCA(t, "deps.example.org", "*.pkg.example.org:443", "10.0.0.0/8")
	roots := caPool(ca)
	verify := func(host string) error {
		leaf, err := ca.leafFor(host)
		if err != nil {
			return err
		}
		opts := x509.VerifyOptions{Roots: roots, DNSName: host}
		_, err = leaf.Leaf.Verify(opts)
		return err
	}
	for _, ok := range []string{"deps.example.org", "a.pkg.example.org", "b.c.pkg.example.org", "10.1.2.3"} {
		if err := verify(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"pkg.example.org", "evil.example", "example.org", "192.0.2.1"} {
		if err := verify(bad); err == nil {
			t.Errorf("%s: the CA vouched for a name outside the allowlist", bad)
		}
	}
	if !ca.Certificate().PermittedDNSDomainsCritical {
		t.Error("name constraints are not critical")
	}
	// Names only: every address is excluded.
	ca2 := newTestCA(t, "deps.example.org")
	leaf, _ := ca2.leafFor("127.0.0.1")
	if _, err := leaf.Leaf.Verify(x509.VerifyOptions{Roots: caPool(ca2), DNSName: "127.0.0.1"}); err == nil {
		t.Error("a names-only CA vouched for an address")
	}
	// Audit mode: no constraints.
	ca3, err := NewInspectCA(InspectCAOptions{Unconstrained: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(ca3.Certificate().PermittedDNSDomains) != 0 {
		t.Error("unconstrained CA has constraints")
	}
	// Leaves are cached per host.
	a, _ := ca.leafFor("deps.example.org")
	b, _ := ca.leafFor("deps.example.org")
	if a != b {
		t.Error("leaf minted twice for one host")
	}
	if ca.Certificate().PublicKeyAlgorithm != x509.ECDSA || time.Until(ca.Certificate().NotAfter) > DefaultInspectValidity {
		t.Errorf("CA key %v, not after %v", ca.Certificate().PublicKeyAlgorithm, ca.Certificate().NotAfter)
	}
}

func openStore(t testing.TB) *store.Store {
	s, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Complete 200 GET bodies land in the store, indexed by request; others
// (errors, HEAD) do not.
func TestStoreReceivesBodies(t *testing.T) {
	body := []byte("stored body")
	up := newTLSUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/x-dep")
		w.Write(body)
	})
	pt := port(t, up.Server)
	rule := fmt.Sprintf("127.0.0.1:%d", pt)
	ca := newTestCA(t, rule)
	st := openStore(t)
	tp := startProxy(t, Config{Inspect: ca, Store: st, TLSConfig: &tls.Config{RootCAs: up.roots}}, rule)
	c := inspectingClient(tp, ca, true)
	base := fmt.Sprintf("https://127.0.0.1:%d", pt)
	for _, p := range []string{"/a", "/missing"} {
		resp, err := c.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	tp.waitEvents(t, 2)
	e, err := st.Lookup("GET", base+"/a", http.Header{"Accept-Encoding": {"gzip"}})
	if err != nil {
		t.Fatalf("lookup: %v", err)
	}
	if e.SHA256 != hexSum(body) || e.ContentType != "text/x-dep" {
		t.Fatalf("entry %+v", e)
	}
	if !st.Has(hexSum(body)) {
		t.Fatal("body not stored")
	}
	if all, _ := st.Entries(); len(all) != 1 {
		t.Fatalf("entries %+v", all)
	}
}

// With egress.cache: prefer, an immutable URL (here an npm tarball) is
// served from the store without asking upstream; a corrupted stored body
// is discarded and fetched again, never served.
func TestCachePreferServesImmutableAndRefetchesCorrupt(t *testing.T) {
	body := []byte("tarball bytes")
	up := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) { w.Write(body) })
	pt := port(t, up.Server)
	st := openStore(t)
	tp := startProxy(t, Config{Store: st, Cache: CachePrefer}, fmt.Sprintf("deps.test:%d", pt), fmt.Sprintf("127.0.0.1:%d", pt))
	c := tp.client(nil)
	get := func(path string) []byte {
		resp, err := c.Get(fmt.Sprintf("http://deps.test:%d%s", pt, path))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return b
	}
	const tgz = "/left-pad/-/left-pad-1.3.0.tgz"
	for range 3 {
		if got := get(tgz); !bytes.Equal(got, body) {
			t.Fatalf("got %q", got)
		}
	}
	if n := up.count(); n != 1 {
		t.Fatalf("upstream saw %d requests for an immutable URL, want 1", n)
	}
	// A mutable URL always goes upstream.
	get("/left-pad")
	get("/left-pad")
	if n := up.count(); n != 3 {
		t.Fatalf("upstream saw %d requests, want 3", n)
	}
	evs := tp.waitEvents(t, 5)
	var cached int
	for _, e := range evs {
		if e.Source == "cache" {
			cached++
			if e.SHA256 != hexSum(body) || !strings.HasPrefix(e.SHA512, "sha512-") {
				t.Fatalf("cache event %+v", e)
			}
		}
	}
	if cached != 2 {
		t.Fatalf("%d cache events, want 2: %+v", cached, evs)
	}
	// Corrupt the blob on disk: it must be refetched, not served.
	p := filepath.Join(st.Dir(), "blobs", "sha256", hexSum(body)[:2], hexSum(body))
	os.Chmod(p, 0o644)
	os.WriteFile(p, []byte("tampered bytes"), 0o644)
	if got := get(tgz); !bytes.Equal(got, body) {
		t.Fatalf("served %q after corruption", got)
	}
	if n := up.count(); n != 4 {
		t.Fatalf("corrupted blob not refetched (upstream saw %d)", n)
	}
}

// An offline replay serves exactly the recorded materials from the store,
// by URL or (module proxy) by module, version and file, and denies the rest
// with a clear message, without resolving or dialing anything.
func TestReplayServesOnlyRecordedMaterials(t *testing.T) {
	st := openStore(t)
	zipBody, modBody := []byte("PK module zip"), []byte("module example.test/dep\n")
	httpsBody := []byte("https material")
	for _, b := range [][]byte{zipBody, modBody, httpsBody} {
		if _, err := st.Put(bytes.NewReader(b), ""); err != nil {
			t.Fatal(err)
		}
	}
	m := NewMaterials()
	// Recorded against another module proxy address: found by module.
	m.Add("http://10.9.9.9:8080/example.test/dep/@v/v1.0.0.zip", hexSum(zipBody), "example.test/dep", "v1.0.0")
	m.Add("http://127.0.0.1:9/example.test/dep/@v/v1.0.0.mod", hexSum(modBody), "example.test/dep", "v1.0.0")
	m.Add("https://127.0.0.1:9443/files/a.bin", hexSum(httpsBody), "", "")
	ca := newTestCA(t, "127.0.0.1:9443")
	tp := startProxy(t, Config{
		Store: st, Replay: m, Inspect: ca,
		GoModUpstream: mustURL("http://127.0.0.1:9/"),
	}, "127.0.0.1:9", "127.0.0.1:9443")
	if !tp.cfg.Offline {
		t.Fatal("replay did not imply offline")
	}
	get := func(c *http.Client, u string) (int, []byte) {
		resp, err := c.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	plain := &http.Client{Timeout: 10 * time.Second}
	gomod := tp.url.String() + "/gomod/example.test/dep/@v/v1.0.0"
	if code, b := get(plain, gomod+".zip"); code != 200 || !bytes.Equal(b, zipBody) {
		t.Fatalf("zip: %d %q", code, b)
	}
	if code, b := get(plain, gomod+".mod"); code != 200 || !bytes.Equal(b, modBody) {
		t.Fatalf("mod: %d %q", code, b)
	}
	if code, b := get(plain, gomod+".info"); code != 403 || !strings.Contains(string(b), "not in the recorded materials") {
		t.Fatalf("unrecorded info: %d %q", code, b)
	}
	c := inspectingClient(tp, ca, true)
	if code, b := get(c, "https://127.0.0.1:9443/files/a.bin"); code != 200 || !bytes.Equal(b, httpsBody) {
		t.Fatalf("https material: %d %q", code, b)
	}
	if code, b := get(c, "https://127.0.0.1:9443/files/other.bin"); code != 403 || !strings.Contains(string(b), "not in the recorded materials") {
		t.Fatalf("unrecorded https: %d %q", code, b)
	}
	if n := tp.dials.count(); n != 0 {
		t.Fatalf("offline proxy dialed %d times", n)
	}
	// A recorded material missing from the store is a clear denial too.
	os.RemoveAll(filepath.Join(st.Dir(), "blobs", "sha256", hexSum(httpsBody)[:2]))
	if code, b := get(c, "https://127.0.0.1:9443/files/a.bin"); code != 403 || !strings.Contains(string(b), "import-materials") {
		t.Fatalf("missing blob: %d %q", code, b)
	}
	evs := tp.waitEvents(t, 6)
	var replayed int
	for _, e := range evs {
		if e.Source == "replay" {
			replayed++
		}
	}
	if replayed != 3 {
		t.Fatalf("%d replayed events: %+v", replayed, evs)
	}
}

// --offline without a provenance answers from the store's index by URL,
// and denies what it does not hold.
func TestOfflineServesFromIndex(t *testing.T) {
	st := openStore(t)
	body := []byte("cached earlier")
	d, _ := st.Put(bytes.NewReader(body), "")
	st.PutEntry(store.Entry{URL: "http://deps.test/a", SHA256: d, Size: int64(len(body)), ContentType: "text/x-test"})
	tp := startProxy(t, Config{Store: st, Offline: true}, "deps.test")
	c := tp.client(nil)
	resp, err := c.Get("http://deps.test/a")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(got, body) || resp.Header.Get("Content-Type") != "text/x-test" {
		t.Fatalf("hit: %d %q %v", resp.StatusCode, got, resp.Header)
	}
	resp, err = c.Get("http://deps.test/b")
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(msg), "not in the local cache") {
		t.Fatalf("miss: %d %q", resp.StatusCode, msg)
	}
	// Nothing else than GET and HEAD can be answered offline.
	resp, err = c.Post("http://deps.test/a", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("POST offline: %d", resp.StatusCode)
	}
	if n := tp.dials.count(); n != 0 {
		t.Fatalf("%d dials offline", n)
	}
}
