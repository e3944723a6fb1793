package integration

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cleanroom-ci/cleanroom/internal/clitest"
	"github.com/cleanroom-ci/cleanroom/internal/testimage"
)

// upstream is a loopback HTTP server in the host namespace, standing in for
// a dependency mirror; requests counts what reached it.
type upstream struct {
	*httptest.Server
	requests chan string
}

func newUpstream(t *testing.T, h http.HandlerFunc) *upstream {
	u := &upstream{requests: make(chan string, 100)}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.requests <- r.URL.Path
		h(w, r)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) hostPort() string { return strings.TrimPrefix(u.URL, "http://") }

func TestEgressAllowedFetchIsRecordedWithDigest(t *testing.T) {
	e := newEnv(t)
	body := bytes.Repeat([]byte("dependency bytes\n"), 4096)
	sum := sha256.Sum256(body)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { w.Write(body) })
	e.pipeline(fmt.Sprintf(`version: 1
image: IMAGE
egress:
  allow: ["%s"]
steps:
  - name: fetch
    run: wget -q -O dep.bin http://%s/dep.bin && sha256sum dep.bin
`, up.hostPort(), up.hostPort()))
	r := e.run(nil, "run")
	if r.code != 0 {
		t.Fatalf("%s", r)
	}
	want := hex.EncodeToString(sum[:])
	if !strings.Contains(r.stderr, want) {
		t.Fatalf("the step did not receive the body:\n%s", r.stderr)
	}
	var found bool
	for _, ev := range e.events() {
		if ev.Decision == "allow" && strings.HasSuffix(ev.URL, "/dep.bin") {
			found = true
			if ev.SHA256 != want || ev.Size != int64(len(body)) || ev.Step != "fetch" || ev.Status != 200 {
				t.Fatalf("event %+v, want sha256 %s size %d", ev, want, len(body))
			}
		}
	}
	if !found {
		t.Fatalf("no allow event for the fetch: %+v", e.events())
	}
}

func TestEgressDeniedHostGetsHelpfulMessage(t *testing.T) {
	e := newEnv(t)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {})
	e.pipeline(fmt.Sprintf(`version: 1
image: IMAGE
egress:
  allow: ["%s"]
steps:
  - name: build
    run: |
      wget -q -O - http://deps.not-allowed.test/x 2>&1 || echo "wget-failed"
      wget -q -O - http://127.0.0.1:1/x 2>&1 || echo "wget-failed-2"
`, up.hostPort()))
	r := e.run(nil, "run", "--output", "json")
	if r.code != 0 || strings.Count(r.stderr, "wget-failed") != 2 {
		t.Fatalf("%s", r)
	}
	if !strings.Contains(r.stderr, "egress denied") || !strings.Contains(r.stderr, "deps.not-allowed.test") {
		t.Fatalf("no warning about the denial:\n%s", r.stderr)
	}
	var denied int
	for _, ev := range e.events() {
		if ev.Decision == "deny" && ev.Host == "deps.not-allowed.test" {
			denied++
		}
	}
	if denied == 0 {
		t.Fatalf("denial not recorded: %+v", e.events())
	}
	if !strings.Contains(r.stdout, `"denials"`) {
		t.Fatalf("summary does not list denials:\n%s", r.stdout)
	}
	select {
	case p := <-up.requests:
		t.Fatalf("a denied request reached the upstream: %s", p)
	default:
	}
}

// The message a step gets tells it how to fix the allowlist.
func TestEgressDenialBodyNamesTheFix(t *testing.T) {
	e := newEnv(t)
	e.pipeline(`version: 1
image: IMAGE
steps:
  - name: build
    run: |
      port=${HTTP_PROXY##*:}
      printf 'GET http://deps.example.test/x HTTP/1.1\r\nHost: deps.example.test\r\nConnection: close\r\n\r\n' | nc 127.0.0.1 "$port"
`)
	r := e.run(nil, "run")
	if r.code != 0 {
		t.Fatalf("%s", r)
	}
	if !strings.Contains(r.stderr, "403") || !strings.Contains(r.stderr, `egress.allow of step "build"`) {
		t.Fatalf("403 body does not name the fix:\n%s", r.stderr)
	}
}

// A name on the allowlist that resolves to loopback is still denied: names
// never reach special addresses, only IP rules can.
func TestEgressNameResolvingToLoopbackIsDenied(t *testing.T) {
	e := newEnv(t)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("secret")) })
	const name = "rebind.cleanroom-test.example"
	clitest.AddHostsEntry(t, "127.0.0.1", name)
	_, port, _ := net.SplitHostPort(up.hostPort())
	e.pipeline(fmt.Sprintf(`version: 1
image: IMAGE
egress:
  allow: ["%s:%s"]
steps:
  - name: build
    run: wget -q -O - http://%s:%s/ 2>&1 || echo wget-failed
`, name, port, name, port))
	r := e.run(nil, "run")
	if r.code != 0 || !strings.Contains(r.stderr, "wget-failed") || strings.Contains(r.stderr, "secret") {
		t.Fatalf("%s", r)
	}
	select {
	case p := <-up.requests:
		t.Fatalf("request reached loopback service: %s", p)
	default:
	}
	var denied bool
	for _, ev := range e.events() {
		denied = denied || (ev.Decision == "deny" && ev.Host == name)
	}
	if !denied {
		t.Fatalf("no deny event: %+v", e.events())
	}
}

// CONNECT must carry a TLS ClientHello whose SNI is the CONNECT host.
func TestEgressConnectWithForgedSNIIsDenied(t *testing.T) {
	e := newEnv(t)
	tlsUp := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(tlsUp.Close)
	hostPort := strings.TrimPrefix(tlsUp.URL, "https://")
	hello := clitest.ClientHello(t, "forged.example.org")
	os.WriteFile(filepath.Join(e.dir, "hello.bin"), hello, 0o644)
	e.pipeline(fmt.Sprintf(`version: 1
image: IMAGE
egress:
  allow: ["%s"]
steps:
  - name: tunnel
    run: |
      port=${HTTPS_PROXY##*:}
      { printf 'CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n'; sleep 1; cat hello.bin; sleep 2; } | nc 127.0.0.1 "$port" > out.bin || true
      echo tunnel-done
`, hostPort, hostPort, hostPort))
	r := e.run(nil, "run")
	if r.code != 0 || !strings.Contains(r.stderr, "tunnel-done") {
		t.Fatalf("%s", r)
	}
	var denied bool
	for _, ev := range e.events() {
		if ev.Decision == "deny" && strings.Contains(ev.Reason, "ClientHello") {
			denied = true
		}
	}
	if !denied {
		t.Fatalf("forged SNI not denied: %+v", e.events())
	}
	out, _ := os.ReadFile(filepath.Join(e.dir, "out.bin"))
	if bytes.Contains(out, []byte{0x16, 0x03}) && len(out) > 200 {
		t.Fatalf("a TLS server answered through the tunnel (%d bytes)", len(out))
	}
}

func TestEgressEmptyAllowlistMeansNoEgress(t *testing.T) {
	e := newEnv(t)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("reached")) })
	e.pipeline(fmt.Sprintf(`version: 1
image: IMAGE
egress:
  allow: ["%s"]
steps:
  - name: sealed
    egress: {allow: []}
    run: wget -q -O - http://%s/ 2>&1 || echo sealed-ok
`, up.hostPort(), up.hostPort()))
	r := e.run(nil, "run")
	if r.code != 0 || !strings.Contains(r.stderr, "sealed-ok") || strings.Contains(r.stderr, "reached") {
		t.Fatalf("%s", r)
	}
}

// `go mod download` works unmodified inside a step through the /gomod/
// endpoint, and each module file is recorded with its digest.
func TestGoModDownloadThroughModuleProxy(t *testing.T) {
	e := newEnv(t)
	goImage := testimage.GoModTools(t)
	zipBytes := moduleZip(t, "example.test/dep", "v1.0.0", map[string]string{
		"go.mod": "module example.test/dep\n\ngo 1.21\n",
		"dep.go": "package dep\n\nconst Answer = 42\n",
	})
	files := map[string][]byte{
		"/example.test/dep/@v/list":        []byte("v1.0.0\n"),
		"/example.test/dep/@v/v1.0.0.info": []byte(`{"Version":"v1.0.0","Time":"2026-01-01T00:00:00Z"}`),
		"/example.test/dep/@v/v1.0.0.mod":  []byte("module example.test/dep\n\ngo 1.21\n"),
		"/example.test/dep/@v/v1.0.0.zip":  zipBytes,
	}
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	})
	e.pipeline(fmt.Sprintf(`version: 1
image: oci-archive:%s
steps:
  - name: deps
    run: |
      export GOTOOLCHAIN=local GONOSUMDB=example.test GOFLAGS=-modcacherw
      go mod download -json example.test/dep@v1.0.0
`, goImage))
	r := e.run(nil, "run", "--goproxy-upstream", up.URL+"/", "--allow", up.hostPort())
	if r.code != 0 {
		t.Fatalf("%s", r)
	}
	zsum := sha256.Sum256(zipBytes)
	var zipEvent *egressEvent
	for _, ev := range e.events() {
		if ev.Module == "example.test/dep" && strings.HasSuffix(ev.URL, ".zip") {
			ev := ev
			zipEvent = &ev
		}
	}
	if zipEvent == nil {
		t.Fatalf("module zip fetch not recorded: %+v", e.events())
	}
	if zipEvent.SHA256 != hex.EncodeToString(zsum[:]) || zipEvent.Version != "v1.0.0" || zipEvent.Decision != "allow" {
		t.Fatalf("zip event %+v", *zipEvent)
	}
	// The provenance lists the module zip as a resolved dependency.
	st, raw := e.provenance()
	var listed bool
	for _, d := range st.Predicate.BuildDefinition.ResolvedDependencies {
		if strings.HasSuffix(d.URI, "/example.test/dep/@v/v1.0.0.zip") && d.Digest["sha256"] == zipEvent.SHA256 {
			listed = true
		}
	}
	if !listed {
		t.Fatalf("module zip not in provenance:\n%s", raw)
	}
}

func moduleZip(t *testing.T, mod, version string, files map[string]string) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, content := range files {
		w, err := zw.Create(mod + "@" + version + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(content))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// clientHello captures the first TLS record a Go client sends for sni.

// addHostsEntry adds a line to /etc/hosts for the test and removes it after.
