package egress

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestForwardAllowedStreamsAndRecords(t *testing.T) {
	payload := bytes.Repeat([]byte("cleanroom-"), 300_000) // 3 MB, many chunks
	sum := sha256.Sum256(payload)
	up := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Upstream", "yes")
		w.Write(payload)
	})
	pt := port(t, up.Server)
	tp := startProxy(t, Config{}, fmt.Sprintf("deps.test:%d", pt), fmt.Sprintf("127.0.0.1:%d", pt))

	resp, err := tp.client(nil).Get(fmt.Sprintf("http://deps.test:%d/pkg.tar", pt))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(got, payload) || resp.Header.Get("X-Upstream") != "yes" {
		t.Fatalf("status %d, %d bytes", resp.StatusCode, len(got))
	}
	if h := up.reqs[0].Host; h != fmt.Sprintf("deps.test:%d", pt) {
		t.Errorf("upstream saw Host %q", h)
	}
	ev := tp.waitEvents(t, 1)[0]
	if ev.Decision != DecisionAllow || ev.Rule != fmt.Sprintf("deps.test:%d", pt) || ev.Status != 200 ||
		ev.SHA256 != hex.EncodeToString(sum[:]) || ev.Size != int64(len(payload)) || ev.BytesIn != int64(len(payload)) ||
		ev.Host != "deps.test" || ev.Port != pt || ev.Addr != fmt.Sprintf("127.0.0.1:%d", pt) || ev.Method != "GET" ||
		ev.URL != fmt.Sprintf("http://deps.test:%d/pkg.tar", pt) || ev.Step != "build" || ev.Conn == 0 {
		t.Errorf("event = %+v", ev)
	}
	if len(tp.Denials()) != 0 {
		t.Errorf("Denials = %v", tp.Denials())
	}
}

func TestForwardDeniedNoDial(t *testing.T) {
	up := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {})
	pt := port(t, up.Server)
	tp := startProxy(t, Config{Step: "build"}, "deps.test")

	for _, target := range []string{
		fmt.Sprintf("http://evil.test:%d/x", pt),         // no rule at all
		fmt.Sprintf("http://deps.test:%d/x", pt),         // rule, wrong port
		"http://example.org/x",                           // unresolvable and unlisted: must not even be resolved
		fmt.Sprintf("http://2130706433:%d/x", pt),        // odd IP spelling
		fmt.Sprintf("http://[::ffff:127.0.0.1]:%d/", pt), // mapped IPv6
	} {
		resp, err := tp.client(nil).Get(target)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 403 || !strings.HasPrefix(string(body), "cleanroom: egress to ") || !strings.Contains(string(body), `for step "build"`) {
			t.Errorf("%s: %d %q", target, resp.StatusCode, body)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("%s: Content-Type %q", target, ct)
		}
	}
	resp, _ := rawExchange(t, tp.addr, "GET http://example.org/ HTTP/1.1\r\nHost: example.org\r\n\r\n")
	if resp.StatusCode != 403 {
		t.Errorf("raw example.org: %s", resp.Status)
	}
	if tp.dials.count() != 0 || up.count() != 0 {
		t.Fatalf("denied requests dialed %d times, upstream saw %d", tp.dials.count(), up.count())
	}
	d := tp.Denials()
	if len(d) != 4 { // both odd spellings of 127.0.0.1 are one destination
		t.Fatalf("Denials = %+v", d)
	}
	for _, x := range d {
		if x.Target == "example.org:80" && (x.Hint != "example.org:80" || x.Count != 2) {
			t.Errorf("denial %+v", x)
		}
	}
	// A percent-encoded address is refused too (net/http rejects the
	// escape in the authority before any decision).
	resp, body := rawExchange(t, tp.addr, fmt.Sprintf("GET http://%%31%%32%%37.0.0.1:%d/ HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", pt, pt))
	if resp.StatusCode != 400 && resp.StatusCode != 403 {
		t.Errorf("percent-encoded IP: %s %q", resp.Status, body)
	}
	if tp.dials.count() != 0 {
		t.Error("percent-encoded IP was dialed")
	}
}

func TestForwardDeniedMessage(t *testing.T) {
	tp := startProxy(t, Config{Step: "build"})
	resp, body := rawExchange(t, tp.addr, "GET http://example.org:443/ HTTP/1.1\r\nHost: example.org:443\r\n\r\n")
	want := `cleanroom: egress to "example.org:443" denied for step "build": no rule matches; add "example.org:443" to egress.allow of step "build"` + "\n"
	if resp.StatusCode != 403 || body != want {
		t.Errorf("got %d %q\nwant %q", resp.StatusCode, body, want)
	}
}

func TestForwardNameToSpecialDenied(t *testing.T) {
	up := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {})
	pt := port(t, up.Server)
	// The name is allowed, but it resolves to loopback and there is no IP
	// rule: denied, with a message saying why.
	tp := startProxy(t, Config{}, fmt.Sprintf("deps.test:%d", pt))
	resp, body := rawExchange(t, tp.addr, fmt.Sprintf("GET http://deps.test:%d/ HTTP/1.1\r\nHost: deps.test:%d\r\n\r\n", pt, pt))
	if resp.StatusCode != 403 || !strings.Contains(body, "loopback") || !strings.Contains(body, "only an IP/CIDR rule") {
		t.Errorf("%d %q", resp.StatusCode, body)
	}
	if tp.dials.count() != 0 || up.count() != 0 {
		t.Error("special address was dialed")
	}
	ev := tp.waitEvents(t, 1)[0]
	if ev.Decision != DecisionDeny || ev.Status != 403 || !strings.Contains(ev.Reason, "127.0.0.1") {
		t.Errorf("event %+v", ev)
	}
}

func TestForwardSmugglingRejected(t *testing.T) {
	up := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {})
	pt := port(t, up.Server)
	tp := startProxy(t, Config{}, fmt.Sprintf("deps.test:%d", pt), fmt.Sprintf("127.0.0.1:%d", pt))
	target := fmt.Sprintf("http://deps.test:%d/", pt)
	for name, raw := range map[string]string{
		"host mismatch":       "GET " + target + " HTTP/1.1\r\nHost: other.test\r\n\r\n",
		"host port mismatch":  "GET " + target + " HTTP/1.1\r\nHost: deps.test:1\r\n\r\n",
		"CL and TE":           "POST " + target + " HTTP/1.1\r\nHost: deps.test:" + fmt.Sprint(pt) + "\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"duplicate CL":        "POST " + target + " HTTP/1.1\r\nHost: deps.test:" + fmt.Sprint(pt) + "\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
		"duplicate equal CL":  "POST " + target + " HTTP/1.1\r\nHost: deps.test:" + fmt.Sprint(pt) + "\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
		"TE not chunked":      "POST " + target + " HTTP/1.1\r\nHost: deps.test:" + fmt.Sprint(pt) + "\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		"two hosts":           "GET " + target + " HTTP/1.1\r\nHost: deps.test\r\nHost: deps.test\r\n\r\n",
		"obs-fold":            "GET " + target + " HTTP/1.1\r\nHost: deps.test:" + fmt.Sprint(pt) + "\r\nX-A: a\r\n b\r\n\r\n",
		"space before colon":  "GET " + target + " HTTP/1.1\r\nHost : deps.test\r\n\r\n",
		"userinfo":            fmt.Sprintf("GET http://deps.test:%d@evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n", pt),
		"https absolute-form": "GET https://deps.test/ HTTP/1.1\r\nHost: deps.test\r\n\r\n",
		"asterisk":            "OPTIONS * HTTP/1.1\r\nHost: deps.test\r\n\r\n",
		"HTTP/2 preface":      "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"no Host":             "GET " + target + " HTTP/1.1\r\n\r\n",
	} {
		resp, body := rawExchange(t, tp.addr, raw)
		if resp.StatusCode != 400 || !strings.HasPrefix(body, "cleanroom: ") {
			t.Errorf("%s: %d %q", name, resp.StatusCode, body)
		}
	}
	if up.count() != 0 || tp.dials.count() != 0 {
		t.Fatalf("rejected requests reached upstream (%d) or dialed (%d)", up.count(), tp.dials.count())
	}
	for _, ev := range tp.rec.Events() {
		if ev.Decision != DecisionDeny || ev.Status != 400 {
			t.Errorf("event %+v", ev)
		}
	}
}

func TestBareLFRejected(t *testing.T) {
	tp := startProxy(t, Config{})
	resp, body := rawExchange(t, tp.addr, "GET http://deps.test/ HTTP/1.1\nHost: deps.test\n\n")
	if resp.StatusCode != 400 || !strings.Contains(body, "bare LF") {
		t.Errorf("%d %q", resp.StatusCode, body)
	}
}

func TestOriginFormRejected(t *testing.T) {
	tp := startProxy(t, Config{Step: "test"})
	resp, body := rawExchange(t, tp.addr, "GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	if resp.StatusCode != 400 || !strings.Contains(body, "HTTP_PROXY") || !strings.Contains(body, `"test"`) {
		t.Errorf("%d %q", resp.StatusCode, body)
	}
}

func TestForwardHopByHopAndBody(t *testing.T) {
	up := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		for _, h := range []string{"Connection", "Proxy-Authorization", "X-Hop", "Keep-Alive", "Te", "Upgrade", "Proxy-Connection"} {
			if v := r.Header.Get(h); v != "" {
				t.Errorf("upstream got hop-by-hop header %s: %q", h, v)
			}
		}
		if r.Header.Get("X-End") != "kept" {
			t.Error("end-to-end header lost")
		}
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Connection", "X-Resp-Hop")
		w.Header().Set("X-Resp-Hop", "secret")
		w.Header().Set("Keep-Alive", "timeout=5")
		fmt.Fprintf(w, "got %d bytes %s", len(body), body)
	})
	pt := port(t, up.Server)
	tp := startProxy(t, Config{}, fmt.Sprintf("deps.test:%d", pt), fmt.Sprintf("127.0.0.1:%d", pt))
	c, err := net.Dial("tcp", tp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Chunked upload followed by a second request on the same connection.
	fmt.Fprintf(c, "POST http://deps.test:%d/up HTTP/1.1\r\nHost: deps.test:%d\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n"+
		"Proxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: websocket\r\nX-End: kept\r\n"+
		"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", pt, pt)
	fmt.Fprintf(c, "GET http://deps.test:%d/second HTTP/1.1\r\nHost: deps.test:%d\r\nX-End: kept\r\n\r\n", pt, pt)
	br := newBufReader(c)
	for i, want := range []string{"got 11 bytes hello world", "got 0 bytes "} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != want {
			t.Errorf("response %d: %q, want %q", i, body, want)
		}
		for _, h := range []string{"X-Resp-Hop", "Keep-Alive"} {
			if resp.Header.Get(h) != "" {
				t.Errorf("client got hop-by-hop response header %s", h)
			}
		}
	}
	evs := tp.waitEvents(t, 2)
	if evs[0].BytesOut != 11 || evs[0].Method != "POST" {
		t.Errorf("upload event %+v", evs[0])
	}
	if evs[0].Conn != evs[1].Conn {
		t.Error("keep-alive requests should share a connection number")
	}
}

func TestForwardUpstreamDown(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	pt := l.Addr().(*net.TCPAddr).Port
	l.Close()
	tp := startProxy(t, Config{}, fmt.Sprintf("deps.test:%d", pt), fmt.Sprintf("127.0.0.1:%d", pt), "nothing.test")
	resp, body := rawExchange(t, tp.addr, fmt.Sprintf("GET http://deps.test:%d/ HTTP/1.1\r\nHost: deps.test:%d\r\n\r\n", pt, pt))
	if resp.StatusCode != 502 {
		t.Errorf("%d %q", resp.StatusCode, body)
	}
	resp, body = rawExchange(t, tp.addr, "GET http://nothing.test/ HTTP/1.1\r\nHost: nothing.test\r\n\r\n")
	if resp.StatusCode != 502 || !strings.Contains(body, "resolving") {
		t.Errorf("%d %q", resp.StatusCode, body)
	}
	for _, ev := range tp.waitEvents(t, 2) {
		if ev.Decision != DecisionAllow || ev.Status != 502 {
			t.Errorf("event %+v", ev)
		}
	}
	if len(tp.Denials()) != 0 {
		t.Errorf("upstream failures are not denials: %+v", tp.Denials())
	}
}

func TestForwardStreamingSmall(t *testing.T) {
	// A body far larger than any buffer, produced and consumed
	// incrementally: the upstream writes 16 MiB, the proxy must relay it
	// chunk by chunk with a correct hash.
	const size = 16 << 20
	chunk := bytes.Repeat([]byte{0xa5}, 64<<10)
	up := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < size/len(chunk); i++ {
			w.Write(chunk)
		}
	})
	pt := port(t, up.Server)
	tp := startProxy(t, Config{}, fmt.Sprintf("deps.test:%d", pt), fmt.Sprintf("127.0.0.1:%d", pt))
	resp, err := tp.client(nil).Get(fmt.Sprintf("http://deps.test:%d/big", pt))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	if err != nil || n != size {
		t.Fatalf("copied %d, %v", n, err)
	}
	ev := tp.waitEvents(t, 1)[0]
	if ev.SHA256 != hex.EncodeToString(h.Sum(nil)) || ev.Size != size {
		t.Errorf("event %+v", ev)
	}
}

func TestForwardSelfGoModAbsolute(t *testing.T) {
	// A client with HTTP_PROXY set and no NO_PROXY for loopback sends its
	// GOPROXY requests to the proxy in absolute form.
	tp := startProxy(t, Config{})
	resp, body := rawExchange(t, tp.addr, fmt.Sprintf("GET http://%s/gomod/example.test/dep/@v/list HTTP/1.1\r\nHost: %s\r\n\r\n", tp.addr, tp.addr))
	if resp.StatusCode != 404 || !strings.Contains(body, "not enabled") {
		t.Errorf("%d %q", resp.StatusCode, body)
	}
}

func TestHeadResponse(t *testing.T) {
	up := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1234")
		if r.Method == "GET" {
			w.Write(make([]byte, 1234))
		}
	})
	pt := port(t, up.Server)
	tp := startProxy(t, Config{}, fmt.Sprintf("deps.test:%d", pt), fmt.Sprintf("127.0.0.1:%d", pt))
	c, _ := net.Dial("tcp", tp.addr)
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "HEAD http://deps.test:%d/ HTTP/1.1\r\nHost: deps.test:%d\r\n\r\nGET http://deps.test:%d/ HTTP/1.1\r\nHost: deps.test:%d\r\n\r\n", pt, pt, pt, pt)
	br := newBufReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "HEAD"})
	if err != nil || resp.ContentLength != 1234 {
		t.Fatalf("HEAD: %v %v", resp, err)
	}
	resp, err = http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET after HEAD: %v %v", resp, err)
	}
}
