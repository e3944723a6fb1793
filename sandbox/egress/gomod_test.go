package egress

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// moduleFixture is a tiny module proxy speaking the GOPROXY protocol for
// example.test/dep (v1.0.0, v1.1.0) and example.test/BurntSushi/toml, plus
// a checksum database named sum.example.test under /sumdb/.
type moduleFixture struct {
	*countingServer
	files map[string][]byte
}

func modZip(t testing.TB, mod, ver string) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range map[string]string{
		"go.mod": "module " + mod + "\n\ngo 1.21\n",
		"dep.go": "package dep\n\n// V is the version.\nconst V = \"" + ver + "\"\n",
	} {
		w, err := zw.Create(mod + "@" + ver + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, body)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func newModuleFixture(t testing.TB, prefix string) *moduleFixture {
	f := &moduleFixture{files: map[string][]byte{}}
	add := func(path string, body []byte) { f.files[prefix+path] = body }
	add("/example.test/dep/@v/list", []byte("v1.0.0\nv1.1.0\n"))
	for _, v := range []string{"v1.0.0", "v1.1.0"} {
		add("/example.test/dep/@v/"+v+".info", []byte(`{"Version":"`+v+`","Time":"2024-01-02T03:04:05Z"}`))
		add("/example.test/dep/@v/"+v+".mod", []byte("module example.test/dep\n\ngo 1.21\n"))
		add("/example.test/dep/@v/"+v+".zip", modZip(t, "example.test/dep", v))
	}
	add("/example.test/dep/@latest", []byte(`{"Version":"v1.1.0","Time":"2024-01-02T03:04:05Z"}`))
	add("/example.test/!burnt!sushi/toml/@v/v1.2.3.info", []byte(`{"Version":"v1.2.3"}`))
	add("/sumdb/sum.example.test/supported", nil)
	add("/sumdb/sum.example.test/lookup/example.test/dep@v1.0.0", []byte("42\nexample.test/dep v1.0.0 h1:x\n"))
	add("/sumdb/sum.example.test/tile/8/0/000", []byte("tiledata"))
	f.countingServer = newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, ok := f.files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	})
	return f
}

func (f *moduleFixture) hash(path string) string {
	s := sha256.Sum256(f.files[path])
	return hex.EncodeToString(s[:])
}

func gomodProxy(t *testing.T, f *moduleFixture, base string, cfg Config) *testProxy {
	pt := port(t, f.Server)
	u, _ := url.Parse(fmt.Sprintf("http://mirror.test:%d%s", pt, base))
	cfg.GoModUpstream = u
	return startProxy(t, cfg, fmt.Sprintf("mirror.test:%d", pt), fmt.Sprintf("127.0.0.1:%d", pt))
}

func get(t *testing.T, rawURL string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestGoModFetches(t *testing.T) {
	f := newModuleFixture(t, "/base")
	tp := gomodProxy(t, f, "/base/", Config{})
	base := "http://" + tp.addr + "/gomod"
	cases := []struct {
		path, module, version string
	}{
		{"/example.test/dep/@v/list", "example.test/dep", ""},
		{"/example.test/dep/@v/v1.0.0.info", "example.test/dep", "v1.0.0"},
		{"/example.test/dep/@v/v1.0.0.mod", "example.test/dep", "v1.0.0"},
		{"/example.test/dep/@v/v1.0.0.zip", "example.test/dep", "v1.0.0"},
		{"/example.test/dep/@latest", "example.test/dep", ""},
		{"/example.test/!burnt!sushi/toml/@v/v1.2.3.info", "example.test/BurntSushi/toml", "v1.2.3"},
	}
	for _, c := range cases {
		code, body := get(t, base+c.path)
		if code != 200 || !bytes.Equal(body, f.files["/base"+c.path]) {
			t.Errorf("%s: %d %q", c.path, code, body)
		}
	}
	evs := tp.waitEvents(t, len(cases))
	for i, c := range cases {
		ev := evs[i]
		if ev.Module != c.module || ev.Version != c.version || ev.SHA256 != f.hash("/base"+c.path) ||
			ev.Decision != DecisionAllow || ev.Host != "mirror.test" || ev.Scheme != "http" || ev.Status != 200 ||
			!strings.HasSuffix(ev.URL, "/base"+c.path) {
			t.Errorf("%s: event %+v", c.path, ev)
		}
	}
}

func TestGoModRejectsNonProtocolPaths(t *testing.T) {
	f := newModuleFixture(t, "")
	tp := gomodProxy(t, f, "", Config{})
	for _, p := range []string{
		"/gomod/",
		"/gomod/example.test/dep",
		"/gomod/example.test/dep/@v/v1.0.0.exe",
		"/gomod/example.test/dep/@v/.zip",
		"/gomod/example.test/../../etc/passwd/@v/list",
		"/gomod/example.test//dep/@v/list",
		"/gomod/example.test/Dep/@v/list",
		"/gomod/example.test/dep/@v/list?x=1",
		"/gomod/example.test/d%65p/@v/list",
		"/gomod/sumdb/sum.example.test/admin",
		"/gomod/sumdb/127.0.0.1/supported",
		"/gomod/admin",
	} {
		code, body := get(t, "http://"+tp.addr+p)
		if code != 404 || !strings.HasPrefix(string(body), "cleanroom: ") {
			t.Errorf("%s: %d %q", p, code, body)
		}
	}
	if f.count() != 0 {
		t.Errorf("upstream saw %d requests", f.count())
	}
	resp, err := http.Post("http://"+tp.addr+"/gomod/example.test/dep/@v/list", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("POST: %d", resp.StatusCode)
	}
}

func TestGoModSumDB(t *testing.T) {
	f := newModuleFixture(t, "")
	tp := gomodProxy(t, f, "", Config{})
	for _, p := range []string{"supported", "lookup/example.test/dep@v1.0.0", "tile/8/0/000"} {
		code, body := get(t, "http://"+tp.addr+"/gomod/sumdb/sum.example.test/"+p)
		if code != 200 || !bytes.Equal(body, f.files["/sumdb/sum.example.test/"+p]) {
			t.Errorf("%s: %d %q", p, code, body)
		}
	}
	ev := tp.waitEvents(t, 2)[1]
	if ev.Module != "example.test/dep" || ev.Version != "v1.0.0" {
		t.Errorf("lookup event %+v", ev)
	}

	// With a separate checksum database upstream, "supported" is answered
	// locally and the rest goes to that upstream's root.
	sum := newModuleFixture(t, "")
	sum.files["/lookup/example.test/dep@v1.0.0"] = []byte("from sumdb upstream")
	spt := port(t, sum.Server)
	su, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d/", spt))
	mu, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d/", port(t, f.Server)))
	tp2 := startProxy(t, Config{GoModUpstream: mu, SumDBUpstream: su}, fmt.Sprintf("127.0.0.1:%d", spt))
	if code, _ := get(t, "http://"+tp2.addr+"/gomod/sumdb/sum.example.test/supported"); code != 200 {
		t.Errorf("local supported: %d", code)
	}
	if code, body := get(t, "http://"+tp2.addr+"/gomod/sumdb/sum.example.test/lookup/example.test/dep@v1.0.0"); code != 200 || string(body) != "from sumdb upstream" {
		t.Errorf("lookup: %d %q", code, body)
	}
}

func TestGoModUpstreamNotAllowed(t *testing.T) {
	f := newModuleFixture(t, "")
	u, _ := url.Parse(fmt.Sprintf("http://mirror.test:%d/", port(t, f.Server)))
	tp := startProxy(t, Config{GoModUpstream: u, Step: "deps"})
	code, body := get(t, "http://"+tp.addr+"/gomod/example.test/dep/@v/list")
	if code != 403 || !strings.Contains(string(body), "mirror.test") || !strings.Contains(string(body), "egress.allow") {
		t.Errorf("%d %q", code, body)
	}
	if f.count() != 0 || tp.dials.count() != 0 {
		t.Error("denied upstream was contacted")
	}
}

func TestGoModDisabled(t *testing.T) {
	tp := startProxy(t, Config{})
	code, body := get(t, "http://"+tp.addr+"/gomod/example.test/dep/@v/list")
	if code != 404 || !strings.Contains(string(body), "not enabled") {
		t.Errorf("%d %q", code, body)
	}
}

func TestGoModRedirects(t *testing.T) {
	cdn := newModuleFixture(t, "/cdn")
	cpt := port(t, cdn.Server)
	front := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, fmt.Sprintf("http://cdn.test:%d/cdn%s?sig=abc", cpt, r.URL.Path), http.StatusFound)
	})
	fpt := port(t, front.Server)
	u, _ := url.Parse(fmt.Sprintf("http://mirror.test:%d/", fpt))
	rules := []string{fmt.Sprintf("mirror.test:%d", fpt), fmt.Sprintf("127.0.0.1:%d", fpt), fmt.Sprintf("127.0.0.1:%d", cpt)}

	// The redirect target is not allowed: 403 naming it.
	tp := startProxy(t, Config{GoModUpstream: u}, rules...)
	code, body := get(t, "http://"+tp.addr+"/gomod/example.test/dep/@v/v1.0.0.zip")
	if code != 403 || !strings.Contains(string(body), "cdn.test") {
		t.Errorf("%d %q", code, body)
	}
	if cdn.count() != 0 {
		t.Error("unallowed redirect target was contacted")
	}

	tp = startProxy(t, Config{GoModUpstream: u}, append(rules, fmt.Sprintf("cdn.test:%d", cpt))...)
	code, body = get(t, "http://"+tp.addr+"/gomod/example.test/dep/@v/v1.0.0.zip")
	if code != 200 || !bytes.Equal(body, cdn.files["/cdn/example.test/dep/@v/v1.0.0.zip"]) {
		t.Fatalf("%d %d bytes", code, len(body))
	}
	evs := tp.waitEvents(t, 2)
	if evs[0].Status != 302 || evs[0].Host != "mirror.test" || evs[1].Host != "cdn.test" || evs[1].Module != "example.test/dep" ||
		evs[1].SHA256 != cdn.hash("/cdn/example.test/dep/@v/v1.0.0.zip") {
		t.Errorf("events %+v", evs)
	}
}

func TestGoModHTTPSUpstream(t *testing.T) {
	fixture := newModuleFixture(t, "")
	tsrv := httptest.NewUnstartedServer(fixture.Config.Handler)
	tsrv.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted case below logs a handshake error
	tsrv.StartTLS()
	t.Cleanup(tsrv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(tsrv.Certificate())
	pt := port(t, tsrv)
	// The test certificate names example.com, which the test resolver maps
	// to 127.0.0.1: the TLS server name must be the upstream's name.
	u, _ := url.Parse(fmt.Sprintf("https://example.com:%d/", pt))
	tp := startProxy(t, Config{GoModUpstream: u, TLSConfig: &tls.Config{RootCAs: pool}},
		fmt.Sprintf("example.com:%d", pt), fmt.Sprintf("127.0.0.1:%d", pt))
	for range 2 { // the second fetch reuses the pooled TLS connection
		code, body := get(t, "http://"+tp.addr+"/gomod/example.test/dep/@v/v1.0.0.mod")
		if code != 200 || !bytes.Equal(body, fixture.files["/example.test/dep/@v/v1.0.0.mod"]) {
			t.Fatalf("%d %q", code, body)
		}
	}
	if ev := tp.waitEvents(t, 1)[0]; ev.Scheme != "https" || ev.SHA256 == "" || ev.Host != "example.com" {
		t.Errorf("event %+v", ev)
	}

	// Without the right roots the upstream is refused.
	tp = startProxy(t, Config{GoModUpstream: u}, fmt.Sprintf("example.com:%d", pt), fmt.Sprintf("127.0.0.1:%d", pt))
	if code, body := get(t, "http://"+tp.addr+"/gomod/example.test/dep/@v/v1.0.0.mod"); code != 502 || !strings.Contains(string(body), "certificate") {
		t.Errorf("untrusted upstream: %d %q", code, body)
	}
}

// TestGoModWithGoCommand runs the real go command against the endpoint.
func TestGoModWithGoCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		t.Skip("go command not available")
	}
	f := newModuleFixture(t, "")
	tp := gomodProxy(t, f, "", Config{})
	tmp := t.TempDir()
	cmd := exec.Command(goBin, "mod", "download", "-json", "example.test/dep@v1.0.0")
	cmd.Dir = tmp
	cmd.Env = []string{
		"HOME=" + tmp,
		"PATH=" + os.Getenv("PATH"),
		"GOPATH=" + filepath.Join(tmp, "gopath"),
		"GOMODCACHE=" + filepath.Join(tmp, "modcache"),
		"GOCACHE=" + filepath.Join(tmp, "cache"),
		"GOPROXY=http://" + tp.addr + "/gomod/",
		"GOSUMDB=off",
		"GOTOOLCHAIN=local",
		"GOFLAGS=-modcacherw",
		"GO111MODULE=on",
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go mod download: %v\n%s", err, out)
	}
	var info struct{ Version, Zip string }
	if err := json.Unmarshal(out, &info); err != nil || info.Version != "v1.0.0" {
		t.Fatalf("go mod download output %s (%v)", out, err)
	}
	seen := map[string]string{}
	for _, ev := range tp.rec.Events() {
		if ev.Decision != DecisionAllow || ev.Status != 200 {
			t.Errorf("event %+v", ev)
		}
		seen[ev.URL[strings.LastIndexByte(ev.URL, '.')+1:]] = ev.SHA256
	}
	if seen["zip"] != f.hash("/example.test/dep/@v/v1.0.0.zip") || seen["mod"] == "" || seen["info"] == "" {
		t.Errorf("events by extension: %v", seen)
	}
}
