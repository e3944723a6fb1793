package integration

import (
	"archive/zip"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cleanroom-ci/cleanroom/internal/clitest"
	"github.com/cleanroom-ci/cleanroom/internal/testenv"
	"github.com/cleanroom-ci/cleanroom/internal/testimage"
)

// The inspection tests run in their own containerd namespace and state
// directory, and each keeps its store in a temporary directory.
var inspectCfg = clitest.Config{Namespace: testenv.Scope("cleanroom-inspect"), StateDir: testenv.Scope("/run/cleanroom-inspect")}

// httpsMirror is a loopback HTTPS server with its own test CA, standing in
// for a private mirror; caFile is its CA certificate for --upstream-ca
// (the host's trust store is never touched).
type httpsMirror struct {
	*httptest.Server
	caFile string
	hits   atomic.Int64
}

func newHTTPSMirror(t *testing.T, files map[string][]byte) *httpsMirror {
	t.Helper()
	m := &httpsMirror{}
	m.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.hits.Add(1)
		b, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	m.EnableHTTP2 = true
	m.StartTLS()
	t.Cleanup(m.Close)
	m.caFile = filepath.Join(t.TempDir(), "mirror-ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: m.Certificate().Raw})
	if err := os.WriteFile(m.caFile, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *httpsMirror) hostPort() string { return strings.TrimPrefix(m.URL, "https://") }

// inspectEvent is an egress event with the fields inspection adds.
type inspectEvent struct {
	clitest.Event
	Inspected bool   `json:"inspected"`
	Source    string `json:"source"`
	SHA512    string `json:"sha512"`
}

func inspectEvents(t *testing.T, out string) []inspectEvent {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(out, "egress.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var evs []inspectEvent
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev inspectEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("egress.jsonl line %q: %v", sc.Text(), err)
		}
		evs = append(evs, ev)
	}
	return evs
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func writePipeline(t *testing.T, e *clitest.Env, yaml string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(e.Dir, "cleanroom.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A step fetches over HTTPS through inspection, with HTTP/2 and with
// HTTP/1.1: it trusts the run's CA through SSL_CERT_FILE, its image's own
// bundle is kept (with the CA appended) at the Debian path and through the
// Alpine symlink, every body is recorded with its sha256 and kept in the
// store, and the provenance has no opaque tunnel left.
func TestInspectHTTPSFetchIsRecordedWithDigest(t *testing.T) {
	e := clitest.New(t, inspectCfg)
	img := testimage.HTTPS(t)
	body := bytes.Repeat([]byte("https dependency\n"), 5000)
	want := sha256Hex(body)
	up := newHTTPSMirror(t, map[string][]byte{"/dist/dep.bin": body})
	cache := t.TempDir()
	writePipeline(t, e, fmt.Sprintf(`version: 1
image: oci-archive:%s
egress:
  allow: ["%s"]
  inspect: true
steps:
  - name: fetch
    run: |
      httpsget https://%s/dist/dep.bin dep.bin
      httpsget -http1 https://%s/dist/dep.bin dep1.bin
      grep -c "%s" /etc/ssl/certs/ca-certificates.crt /etc/ssl/cert.pem
      grep -c "BEGIN CERTIFICATE" "$SSL_CERT_FILE" "$NODE_EXTRA_CA_CERTS" /etc/ssl/certs/ca-certificates.crt
      echo "trust=$SSL_CERT_FILE git=$GIT_SSL_CAINFO curl=$CURL_CA_BUNDLE py=$REQUESTS_CA_BUNDLE"
artifacts: ["dep.bin"]
`, img, up.hostPort(), up.hostPort(), up.hostPort(), testimage.ImageBundleMarker))
	r := e.Run(nil, "run", "--upstream-ca", up.caFile, "--cache", cache)
	if r.Code != 0 {
		t.Fatalf("%s", r)
	}
	for _, s := range []string{"HTTP/2.0 sha256=" + want, "HTTP/1.1 sha256=" + want,
		"/etc/ssl/certs/ca-certificates.crt:1", "/etc/ssl/cert.pem:1",
		"trust=/etc/cleanroom/tls/bundle.pem git=/etc/cleanroom/tls/bundle.pem curl=/etc/cleanroom/tls/bundle.pem py=/etc/cleanroom/tls/bundle.pem"} {
		if !strings.Contains(r.Stderr, s) {
			t.Fatalf("step output lacks %q:\n%s", s, r)
		}
	}
	var gets int
	for _, ev := range inspectEvents(t, filepath.Join(e.Dir, ".cleanroom")) {
		if ev.Method == "GET" {
			gets++
			if ev.URL != "https://"+up.hostPort()+"/dist/dep.bin" || ev.SHA256 != want || ev.Size != int64(len(body)) || ev.Status != 200 || ev.Decision != "allow" {
				t.Fatalf("request event %+v", ev)
			}
		}
		if ev.Method == "CONNECT" && (!ev.Inspected || ev.Decision != "allow") {
			t.Fatalf("tunnel event %+v", ev)
		}
	}
	if gets != 2 {
		t.Fatalf("%d request events, want 2", gets)
	}
	if _, err := os.Stat(filepath.Join(cache, "blobs", "sha256", want[:2], want)); err != nil {
		t.Fatalf("body not kept in the store: %v", err)
	}
	// Every dependency has a digest: no opaque tunnel is left to trust.
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(pol, []byte("allDependenciesDigested: true\nnoDeniedEgress: true\n"), 0o644)
	v := e.Run(nil, "verify", filepath.Join(e.Dir, "dep.bin"), "--provenance", filepath.Join(e.Dir, ".cleanroom", "provenance.intoto.json"), "--policy", pol)
	if v.Code != 0 {
		t.Fatalf("verify: %s", v)
	}
	clitest.RequireNoResidue(t, inspectCfg)
}

// A client that does not trust the run's CA (here: told to use another
// bundle, as a pinning client would) fails loudly; the denial says why,
// and no byte reaches the upstream through an unrecorded tunnel.
func TestInspectPinnedClientFailsLoudly(t *testing.T) {
	e := clitest.New(t, inspectCfg)
	img := testimage.HTTPS(t)
	up := newHTTPSMirror(t, map[string][]byte{"/x": []byte("secret")})
	writePipeline(t, e, fmt.Sprintf(`version: 1
image: oci-archive:%s
egress: {allow: ["%s"], inspect: true}
steps:
  - name: pinned
    run: SSL_CERT_FILE=/etc/passwd SSL_CERT_DIR=/nonexistent httpsget https://%s/x x.bin || echo pinned-client-failed
`, img, up.hostPort(), up.hostPort()))
	r := e.Run(nil, "run", "--upstream-ca", up.caFile, "--cache", t.TempDir())
	if r.Code != 0 || !strings.Contains(r.Stderr, "pinned-client-failed") {
		t.Fatalf("%s", r)
	}
	if !strings.Contains(r.Stderr, "does not trust the run's inspection CA") {
		t.Fatalf("no hint in the log:\n%s", r.Stderr)
	}
	var denied bool
	for _, ev := range inspectEvents(t, filepath.Join(e.Dir, ".cleanroom")) {
		denied = denied || (ev.Decision == "deny" && strings.Contains(ev.Reason, "no unrecorded tunnel"))
	}
	if !denied || up.hits.Load() != 0 {
		t.Fatalf("denied %v, upstream hits %d", denied, up.hits.Load())
	}
}

// Record a build that downloads a Go module (module proxy behind HTTPS)
// and an HTTPS file through inspection; move its materials to another
// store with export/import; stop the upstream; replay: the artifacts are
// reproduced from exactly the recorded bytes. go.sum declares the module,
// and the lockfile check says so.
func TestInspectReplayReproducesGoModuleBuild(t *testing.T) {
	e := clitest.New(t, inspectCfg)
	goImage := testimage.GoModTools(t)
	httpsImage := testimage.HTTPS(t)
	zipBytes := moduleZip(t, "example.test/dep", "v1.0.0", map[string]string{
		"go.mod": "module example.test/dep\n\ngo 1.21\n",
		"dep.go": "package dep\n\nconst Answer = 42\n",
	})
	asset := bytes.Repeat([]byte("asset\n"), 1000)
	up := newHTTPSMirror(t, map[string][]byte{
		"/example.test/dep/@v/list":        []byte("v1.0.0\n"),
		"/example.test/dep/@v/v1.0.0.info": []byte(`{"Version":"v1.0.0","Time":"2026-01-01T00:00:00Z"}`),
		"/example.test/dep/@v/v1.0.0.mod":  []byte("module example.test/dep\n\ngo 1.21\n"),
		"/example.test/dep/@v/v1.0.0.zip":  zipBytes,
		"/assets/asset.bin":                asset,
	})
	// The go.sum hashes, as the go command computes them.
	os.WriteFile(filepath.Join(e.Dir, "go.sum"), []byte(
		"example.test/dep v1.0.0 "+h1Zip(t, zipBytes)+"\n"+
			"example.test/dep v1.0.0/go.mod "+h1File(t, "go.mod", []byte("module example.test/dep\n\ngo 1.21\n"))+"\n"), 0o644)
	writePipeline(t, e, fmt.Sprintf(`version: 1
image: oci-archive:%s
egress: {allow: ["%s"]}
steps:
  - name: deps
    run: |
      export GOTOOLCHAIN=local GONOSUMDB=example.test GOFLAGS=-modcacherw
      go mod download -json example.test/dep@v1.0.0 >/dev/null
      mkdir -p out
      cp "$(go env GOMODCACHE)/cache/download/example.test/dep/@v/v1.0.0.zip" out/dep.zip
  - name: asset
    image: oci-archive:%s
    egress: {inspect: true}
    run: httpsget https://%s/assets/asset.bin out/asset.bin
artifacts: ["out/*"]
`, goImage, up.hostPort(), httpsImage, up.hostPort()))
	cacheA, cacheB := t.TempDir(), t.TempDir()
	flags := []string{"--goproxy-upstream", up.URL + "/", "--upstream-ca", up.caFile}
	r := e.Run(nil, append([]string{"run", "--cache", cacheA, "--out", filepath.Join(e.Dir+".out", "rec")}, flags...)...)
	if r.Code != 0 {
		t.Fatalf("record: %s", r)
	}
	if !strings.Contains(r.Stdout, "lockfiles (go.sum): 2 fetched packages match, 0 undeclared, 0 hash mismatches") {
		t.Fatalf("lockfile check:\n%s", r)
	}
	prov := filepath.Join(t.TempDir(), "provenance.intoto.json")
	data, err := os.ReadFile(filepath.Join(e.Dir+".out", "rec", "provenance.intoto.json"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(prov, data, 0o644)
	var zipFetched, assetFetched bool
	for _, ev := range inspectEvents(t, filepath.Join(e.Dir+".out", "rec")) {
		zipFetched = zipFetched || (ev.Module == "example.test/dep" && strings.HasSuffix(ev.URL, ".zip") && ev.SHA256 == sha256Hex(zipBytes))
		assetFetched = assetFetched || (strings.HasPrefix(ev.URL, "https://") && ev.SHA256 == sha256Hex(asset))
	}
	if !zipFetched || !assetFetched {
		t.Fatalf("fetches not recorded: zip %v asset %v", zipFetched, assetFetched)
	}

	// Another machine: export, import into an empty store.
	export := filepath.Join(t.TempDir(), "materials")
	if r := e.Run(nil, "export-materials", prov, export, "--cache", cacheA); r.Code != 0 {
		t.Fatalf("export: %s", r)
	}
	if r := e.Run(nil, "import-materials", export, "--cache", cacheB); r.Code != 0 || !strings.Contains(r.Stdout, "imported") {
		t.Fatalf("import: %s", r)
	}

	up.Close()
	before := up.hits.Load()
	os.RemoveAll(filepath.Join(e.Dir, "out"))
	r = e.Run(nil, append([]string{"run", "--replay", prov, "--cache", cacheB, "--out", filepath.Join(e.Dir+".out", "replay")}, flags...)...)
	if r.Code != 0 || !strings.Contains(r.Stdout, "replay: reproduced") {
		t.Fatalf("replay: %s", r)
	}
	if up.hits.Load() != before {
		t.Fatal("the replay contacted the upstream")
	}
	var replayed int
	for _, ev := range inspectEvents(t, filepath.Join(e.Dir+".out", "replay")) {
		if ev.Source == "replay" {
			replayed++
		}
	}
	if replayed < 3 { // .info, .mod, .zip and the asset at least
		t.Fatalf("only %d requests served from the recorded materials", replayed)
	}
	clitest.RequireNoResidue(t, inspectCfg)
}

// A replay that needs a URL the recorded run did not fetch fails, and
// says that the URL is not in the recorded materials.
func TestInspectReplayOfUnrecordedURLFails(t *testing.T) {
	e := clitest.New(t, inspectCfg)
	img := testimage.HTTPS(t)
	up := newHTTPSMirror(t, map[string][]byte{"/a": []byte("a"), "/b": []byte("b")})
	os.WriteFile(filepath.Join(e.Dir, "urls.txt"), []byte("/a\n"), 0o644)
	writePipeline(t, e, fmt.Sprintf(`version: 1
image: oci-archive:%s
egress: {allow: ["%s"], inspect: true}
steps:
  - name: fetch
    run: |
      mkdir -p out
      for u in $(cat urls.txt); do httpsget "https://%s$u" "out/${u#/}"; done
artifacts: ["out/*"]
`, img, up.hostPort(), up.hostPort()))
	cache := t.TempDir()
	r := e.Run(nil, "run", "--upstream-ca", up.caFile, "--cache", cache, "--out", filepath.Join(e.Dir+".out", "rec"))
	if r.Code != 0 {
		t.Fatalf("record: %s", r)
	}
	prov := filepath.Join(e.Dir+".out", "rec", "provenance.intoto.json")
	up.Close()
	// The source changed: the build now needs /b too.
	os.WriteFile(filepath.Join(e.Dir, "urls.txt"), []byte("/a\n/b\n"), 0o644)
	os.RemoveAll(filepath.Join(e.Dir, "out"))
	r = e.Run(nil, "run", "--replay", prov, "--cache", cache, "--out", filepath.Join(e.Dir+".out", "replay"))
	if r.Code != 1 {
		t.Fatalf("replay needing an unrecorded URL: %s", r)
	}
	if !strings.Contains(r.Stderr, "/b is not in the recorded materials") {
		t.Fatalf("no clear message:\n%s", r)
	}
	// And a replay whose artifacts differ says which.
	os.WriteFile(filepath.Join(e.Dir, "urls.txt"), []byte("/a\n"), 0o644)
	writePipeline(t, e, fmt.Sprintf(`version: 1
image: oci-archive:%s
egress: {allow: ["%s"], inspect: true}
steps:
  - name: fetch
    run: |
      mkdir -p out
      for u in $(cat urls.txt); do httpsget "https://%s$u" "out/${u#/}"; done
      echo changed >> out/a
artifacts: ["out/*"]
`, img, up.hostPort(), up.hostPort()))
	os.RemoveAll(filepath.Join(e.Dir, "out"))
	r = e.Run(nil, "run", "--replay", prov, "--cache", cache, "--out", filepath.Join(e.Dir+".out", "replay2"))
	if r.Code != 1 || !strings.Contains(r.Stdout, "replay: artifacts differ") || !strings.Contains(r.Stdout, "differs: out/a") {
		t.Fatalf("differing replay: %s", r)
	}
	clitest.RequireNoResidue(t, inspectCfg)
}

// h1Zip and h1File compute go.sum hashes independently of the runner's
// code: sha256 over "<hex sha256>  <name>\n" lines, sorted by name.
func h1Zip(t *testing.T, z []byte) string {
	t.Helper()
	zr, err := zipReader(z)
	if err != nil {
		t.Fatal(err)
	}
	return zr
}

func h1File(t *testing.T, name string, data []byte) string {
	return h1Lines([][2]string{{name, sha256Hex(data)}})
}

func zipReader(z []byte) (string, error) {
	zr, err := zip.NewReader(bytes.NewReader(z), int64(len(z)))
	if err != nil {
		return "", err
	}
	var lines [][2]string
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			return "", err
		}
		h := sha256.New()
		io.Copy(h, rc)
		rc.Close()
		lines = append(lines, [2]string{f.Name, hex.EncodeToString(h.Sum(nil))})
	}
	return h1Lines(lines), nil
}

func h1Lines(files [][2]string) string {
	sort.Slice(files, func(i, j int) bool { return files[i][0] < files[j][0] })
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%s  %s\n", f[1], f[0])
	}
	return "h1:" + base64.StdEncoding.EncodeToString(h.Sum(nil))
}
