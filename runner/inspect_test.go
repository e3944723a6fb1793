package runner

import (
	"archive/zip"
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/runner/manifest"
	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress/store"
)

func hexSHA(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func escapeModPath(p string) string {
	var b strings.Builder
	for _, r := range p {
		if 'A' <= r && r <= 'Z' {
			b.WriteByte('!')
			b.WriteRune(r - 'A' + 'a')
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Our h1 must be the go command's: check it against the module cache's
// .ziphash files and this repository's go.sum.
func TestHash1MatchesTheGoCommand(t *testing.T) {
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Skip("no go command")
	}
	cache := filepath.Join(strings.TrimSpace(string(out)), "cache", "download")
	zips, _ := filepath.Glob(filepath.Join(cache, "golang.org", "x", "*", "@v", "*.zip"))
	checked := 0
	for _, z := range zips {
		want, err := os.ReadFile(strings.TrimSuffix(z, ".zip") + ".ziphash")
		if err != nil {
			continue
		}
		f, err := os.Open(z)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := f.Stat()
		got, err := hashZip(f, fi.Size())
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", z, err)
		}
		if got != strings.TrimSpace(string(want)) {
			t.Fatalf("%s: h1 %s, the go command says %s", z, got, want)
		}
		if checked++; checked >= 5 {
			break
		}
	}
	sum, err := os.ReadFile("../go.sum")
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(sum))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || !strings.HasSuffix(f[1], "/go.mod") {
			continue
		}
		mod := filepath.Join(cache, escapeModPath(f[0]), "@v", strings.TrimSuffix(f[1], "/go.mod")+".mod")
		data, err := os.ReadFile(mod)
		if err != nil {
			continue
		}
		st, _ := store.Open(t.TempDir(), store.Options{})
		d, _ := st.Put(bytes.NewReader(data), "")
		got, err := goHash(st, d, ".mod")
		if err != nil || got != f[2] {
			t.Fatalf("%s: h1 %s (%v), go.sum says %s", mod, got, err, f[2])
		}
		if checked++; checked >= 10 {
			break
		}
	}
	if checked == 0 {
		t.Skip("no module cache to compare with")
	}
}

func moduleZip(t *testing.T, prefix string, files map[string]string) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, content := range files {
		w, _ := zw.Create(prefix + "/" + name)
		w.Write([]byte(content))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestLockfileCheckGoAndNPM(t *testing.T) {
	ws := t.TempDir()
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	good := moduleZip(t, "example.test/good@v1.0.0", map[string]string{"go.mod": "module example.test/good\n", "a.go": "package good\n"})
	bad := moduleZip(t, "example.test/bad@v1.0.0", map[string]string{"go.mod": "module example.test/bad\n"})
	extra := moduleZip(t, "example.test/extra@v0.1.0", map[string]string{"go.mod": "module example.test/extra\n"})
	for _, z := range [][]byte{good, bad, extra} {
		st.Put(bytes.NewReader(z), "")
	}
	goodH1, _ := hashZip(bytes.NewReader(good), int64(len(good)))
	os.WriteFile(filepath.Join(ws, "go.sum"), []byte(
		"example.test/good v1.0.0 "+goodH1+"\n"+
			"example.test/bad v1.0.0 h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"), 0o644)
	tgz := []byte("npm tarball")
	s512 := sha512.Sum512(tgz)
	integrity := "sha512-" + base64.StdEncoding.EncodeToString(s512[:])
	os.MkdirAll(filepath.Join(ws, "web"), 0o755)
	os.WriteFile(filepath.Join(ws, "web", "package-lock.json"), []byte(`{"lockfileVersion":3,"packages":{
		"": {"name":"app"},
		"node_modules/left-pad": {"version":"1.3.0","resolved":"https://registry.example.test/left-pad/-/left-pad-1.3.0.tgz","integrity":"`+integrity+`"},
		"node_modules/@s/x": {"version":"2.0.0","resolved":"https://registry.example.test/@s/x/-/x-2.0.0.tgz","integrity":"sha512-AAAA"}}}`), 0o644)
	// node_modules is never read: a step could plant lockfiles there.
	os.MkdirAll(filepath.Join(ws, "node_modules", "p"), 0o755)
	os.WriteFile(filepath.Join(ws, "node_modules", "p", "go.sum"), []byte("example.test/extra v0.1.0 h1:x=\n"), 0o644)

	d := readLockfiles(ws, filepath.Join(ws, ".cleanroom"))
	if !slices.Equal(d.files, []string{"go.sum", "web/package-lock.json"}) {
		t.Fatalf("lockfiles %v", d.files)
	}
	ev := func(url string, body []byte, mod, ver string) egress.Event {
		e := egress.Event{Step: "deps", Method: "GET", URL: url, Status: 200, SHA256: hexSHA(body), Decision: egress.DecisionAllow, Module: mod, Version: ver}
		if egress.IsNPMTarball(url) {
			s := sha512.Sum512(body)
			e.SHA512 = "sha512-" + base64.StdEncoding.EncodeToString(s[:])
		}
		return e
	}
	events := []egress.Event{
		ev("http://127.0.0.1:1/example.test/good/@v/v1.0.0.zip", good, "example.test/good", "v1.0.0"),
		ev("http://127.0.0.1:1/example.test/good/@v/v1.0.0.zip", good, "example.test/good", "v1.0.0"), // counted once
		ev("http://127.0.0.1:1/example.test/bad/@v/v1.0.0.zip", bad, "example.test/bad", "v1.0.0"),
		ev("http://127.0.0.1:1/example.test/extra/@v/v0.1.0.zip", extra, "example.test/extra", "v0.1.0"),
		ev("http://127.0.0.1:1/example.test/good/@v/v1.0.0.info", []byte("{}"), "example.test/good", "v1.0.0"), // not a package
		ev("https://mirror.example.test/npm/left-pad/-/left-pad-1.3.0.tgz", tgz, "", ""),                       // via a mirror
		ev("https://registry.example.test/@s/x/-/x-2.0.0.tgz", []byte("other"), "", ""),
		ev("https://registry.example.test/undeclared/-/undeclared-0.0.1.tgz", []byte("u"), "", ""),
		{Step: "deps", Method: "GET", URL: "https://registry.example.test/denied/-/denied-1.tgz", Status: 403, Decision: egress.DecisionDeny},
	}
	lc := checkLockfiles(d, events, st)
	if lc.Checked != 2 {
		t.Errorf("checked %d, want 2 (good zip, left-pad): %+v", lc.Checked, lc)
	}
	pkgs := func(fs []manifest.LockfileFinding) []string {
		var out []string
		for _, f := range fs {
			out = append(out, f.Ecosystem+":"+f.Package+"@"+f.Version)
		}
		slices.Sort(out)
		return out
	}
	if got := pkgs(lc.Undeclared); !slices.Equal(got, []string{"go:example.test/extra@v0.1.0", "npm:undeclared@0.0.1"}) {
		t.Errorf("undeclared %v", got)
	}
	if got := pkgs(lc.Mismatches); !slices.Equal(got, []string{"go:example.test/bad@v1.0.0", "npm:@s/x@2.0.0"}) {
		t.Errorf("mismatches %v", got)
	}
	// Without the bodies, Go's h1 cannot be computed: unverified, not a
	// pass and not a mismatch.
	lc = checkLockfiles(d, events[:1], nil)
	if lc.Checked != 0 || len(lc.Unverified) != 1 || len(lc.Mismatches) != 0 {
		t.Errorf("no store: %+v", lc)
	}
}

func TestNPMKey(t *testing.T) {
	for in, want := range map[string]string{
		"https://registry.example.test/left-pad/-/left-pad-1.3.0.tgz":  "left-pad/-/left-pad-1.3.0.tgz",
		"https://r.example.test/npm/@babel/core/-/core-7.0.0.tgz":      "@babel/core/-/core-7.0.0.tgz",
		"https://r.example.test/@babel%2fcore/-/core-7.0.0.tgz":        "@babel/core/-/core-7.0.0.tgz",
		"https://registry.example.test/left-pad":                       "",
		"https://registry.example.test/left-pad/-/left-pad-1.3.0.json": "",
	} {
		if got := npmKey(in); got != want {
			t.Errorf("npmKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWithEnvRunnerWins(t *testing.T) {
	env := withEnv([]string{"A=1", "SSL_CERT_FILE=/mine.pem", "Z=2"}, InspectEnv())
	if !slices.IsSorted(env) {
		t.Fatalf("not sorted: %v", env)
	}
	if !slices.Contains(env, "SSL_CERT_FILE="+InspectTrustDir+"/bundle.pem") || slices.Contains(env, "SSL_CERT_FILE=/mine.pem") {
		t.Fatalf("env %v", env)
	}
	for _, k := range []string{"NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO"} {
		found := false
		for _, kv := range env {
			found = found || strings.HasPrefix(kv, k+"=")
		}
		if !found {
			t.Errorf("%s not set", k)
		}
	}
}

func TestPipelineInspectAndCacheFields(t *testing.T) {
	p, err := pipeline.Parse("cleanroom.yaml", []byte(`version: 1
image: busybox@sha256:`+strings.Repeat("a", 64)+`
egress:
  allow: ["deps.example.org", "*.pkg.example.org"]
  inspect: true
  cache: prefer
steps:
  - name: a
    run: "true"
  - name: b
    run: "true"
    egress: {inspect: false, cache: "off"}
`))
	if err != nil {
		t.Fatal(err)
	}
	a, b := p.Steps[0], p.Steps[1]
	if !p.StepInspect(a) || p.StepInspect(b) || p.StepCache(a) != "prefer" || p.StepCache(b) != "off" {
		t.Fatalf("inspect %v/%v cache %s/%s", p.StepInspect(a), p.StepInspect(b), p.StepCache(a), p.StepCache(b))
	}
	if _, err := pipeline.Parse("c.yaml", []byte("version: 1\nimage: x@sha256:"+strings.Repeat("a", 64)+"\negress: {cache: sometimes}\nsteps: [{name: a, run: x}]\n")); err == nil ||
		!strings.Contains(err.Error(), "egress.cache") {
		t.Fatalf("bad cache value: %v", err)
	}
	// The run's CA is constrained to the inspected steps' allowlists.
	cfg := Config{Pipeline: p, StateDir: t.TempDir(), RunID: "r1", ExtraAllow: []string{"10.1.0.0/16"}}
	in, err := setupInspection(cfg, p.Steps)
	if err != nil || in == nil {
		t.Fatalf("inspection %v %v", in, err)
	}
	defer in.Close()
	c := in.CA.Certificate()
	if !slices.Equal(c.PermittedDNSDomains, []string{"deps.example.org", ".pkg.example.org"}) || len(c.PermittedIPRanges) != 1 {
		t.Fatalf("constraints %v %v", c.PermittedDNSDomains, c.PermittedIPRanges)
	}
	cfg.Pipeline.Egress.Inspect = nil
	if in, _ := setupInspection(cfg, p.Steps); in != nil {
		t.Fatal("a CA was minted with no inspected step")
	}
}

// --inspect turns inspection on for every step but one that says
// egress.inspect: false itself (a client that refuses the run's CA); an
// offline run inspects every step, as it can answer HTTPS no other way, and
// so does --require-inspection for the steps that allow a rule it names.
func TestInspectFlagKeepsAStepsInspectFalse(t *testing.T) {
	p, err := pipeline.Parse("cleanroom.yaml", []byte(`version: 1
image: busybox@sha256:`+strings.Repeat("a", 64)+`
egress:
  allow: ["deps.example.org"]
  inspect: false
steps:
  - name: default
    run: "true"
  - name: pinned-client
    run: "true"
    egress: {inspect: false}
  - name: wants-it
    run: "true"
    egress: {inspect: true}
`))
	if err != nil {
		t.Fatal(err)
	}
	def, pinned, wants := p.Steps[0], p.Steps[1], p.Steps[2]
	for _, tc := range []struct {
		name                 string
		cfg                  Config
		def, pinned, wantsIt bool
	}{
		{"no flag", Config{Pipeline: p}, false, false, true},
		{"--inspect", Config{Pipeline: p, Inspect: true}, true, false, true},
		{"--offline", Config{Pipeline: p, Inspect: true, Offline: true}, true, true, true},
		// --require-inspection defends against domain fronting: no step
		// opts out of it.
		{"--require-inspection", Config{Pipeline: p, RequireInspection: []string{"deps.example.org"}}, true, true, true},
	} {
		got := []bool{stepInspect(tc.cfg, def), stepInspect(tc.cfg, pinned), stepInspect(tc.cfg, wants)}
		if !slices.Equal(got, []bool{tc.def, tc.pinned, tc.wantsIt}) {
			t.Errorf("%s: inspected (default, pinned-client, wants-it) = %v, want %v", tc.name, got, []bool{tc.def, tc.pinned, tc.wantsIt})
		}
	}
	// With --inspect and only the opted-out step selected, no CA is minted.
	cfg := Config{Pipeline: p, Inspect: true, StateDir: t.TempDir(), RunID: "r2"}
	if in, err := setupInspection(cfg, []pipeline.Step{pinned}); in != nil || err != nil {
		t.Fatalf("a CA was minted for a step that opted out: %v %v", in, err)
	}
}

// --require-inspection compares rules, not their spelling: a step that
// writes the required host in capitals, with a trailing dot, with an
// explicit default port, or as a wildcard above it still reaches that host,
// so it is inspected even when it says egress.inspect: false itself.
func TestRequireInspectionMatchesEverySpelling(t *testing.T) {
	for _, tc := range []struct {
		allow string
		want  bool
	}{
		{"cdn.example.com", true},
		{"CDN.example.com", true},
		{"cdn.example.com.", true},
		{"cdn.example.com:443", true},
		{"cdn.example.com:80", true},
		{"*.example.com", true},
		{"*.Example.COM.:443", true},
		{"*.com", true},
		{"cdn.example.com:8443", false}, // a port the required rule does not name
		{"other.example.com", false},
		{"*.cdn.example.com", false}, // names below the host, not the host
		{"10.0.0.1:443", false},
	} {
		p, err := pipeline.Parse("cleanroom.yaml", []byte(`version: 1
image: busybox@sha256:`+strings.Repeat("a", 64)+`
steps:
  - name: s
    run: "true"
    egress: {allow: ["`+tc.allow+`"], inspect: false}
`))
		if err != nil {
			t.Fatal(err)
		}
		cfg := Config{Pipeline: p, RequireInspection: []string{"cdn.example.com"}}
		if got := stepInspect(cfg, p.Steps[0]); got != tc.want {
			t.Errorf("allow %q with --require-inspection cdn.example.com: inspected = %v, want %v", tc.allow, got, tc.want)
		}
		// The same through --allow rather than the pipeline.
		cfg.Pipeline, _ = pipeline.Parse("cleanroom.yaml", []byte(`version: 1
image: busybox@sha256:`+strings.Repeat("a", 64)+`
steps:
  - name: s
    run: "true"
    egress: {allow: [], inspect: false}
`))
		cfg.ExtraAllow = []string{tc.allow}
		if got := stepInspect(cfg, cfg.Pipeline.Steps[0]); got != tc.want {
			t.Errorf("--allow %q with --require-inspection cdn.example.com: inspected = %v, want %v", tc.allow, got, tc.want)
		}
	}
}

func TestReplayCompare(t *testing.T) {
	r := &Replay{Path: "p.json", Subjects: []manifest.Subject{{Name: "out/a", SHA256: strings.Repeat("a", 64)}, {Name: "out/b", SHA256: strings.Repeat("b", 64)}}}
	if res := r.Compare([]manifest.Subject{{Name: "out/b", SHA256: strings.Repeat("b", 64)}, {Name: "out/a", SHA256: strings.Repeat("a", 64)}}); !res.Reproduced {
		t.Fatalf("same artifacts: %+v", res)
	}
	res := r.Compare([]manifest.Subject{{Name: "out/a", SHA256: strings.Repeat("c", 64)}, {Name: "out/new", SHA256: strings.Repeat("d", 64)}})
	if res.Reproduced || len(res.Differences) != 3 {
		t.Fatalf("%+v", res)
	}
	if d := res.Differences[1]; d.Name != "out/b" || d.Replayed != "" {
		t.Fatalf("missing artifact: %+v", d)
	}
}

// A provenance's fetches become replay materials; export copies exactly
// those bodies (verified) and import brings them into another store.
func TestLoadReplayExportImport(t *testing.T) {
	zipBody := []byte("module zip")
	httpsBody := []byte("https body")
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st, err := manifest.Build(manifest.Input{
		InvocationID: "x", StartedOn: start, FinishedOn: start.Add(time.Minute), RunnerVersion: "test",
		Pipeline: manifest.File{Path: "cleanroom.yaml", SHA256: strings.Repeat("1", 64)},
		Source:   manifest.Source{TreeSHA256: strings.Repeat("2", 64)},
		Steps:    []string{"deps"},
		Dependencies: []manifest.Dependency{
			{Step: "deps", URL: "http://127.0.0.1:9/example.test/dep/@v/v1.0.0.zip", SHA256: hexSHA(zipBody), Size: int64(len(zipBody)), Method: "GET", Module: "example.test/dep", Version: "v1.0.0"},
			{Step: "deps", URL: "https://127.0.0.1:9443/a.bin?token=s3cret", SHA256: hexSHA(httpsBody), Size: int64(len(httpsBody)), Method: "GET"},
			{Step: "deps", URL: "opaque.example.test:443", Method: "CONNECT"},
		},
		Subjects: []manifest.Subject{{Name: "out/app", SHA256: strings.Repeat("3", 64)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "provenance.intoto.json")
	if err := manifest.WriteFile(path, st); err != nil {
		t.Fatal(err)
	}
	r, err := LoadReplay(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Materials) != 2 || len(r.Tunnels) != 1 || len(r.Subjects) != 1 || r.materials().Len() != 2 {
		t.Fatalf("replay %+v", r)
	}
	src, _ := store.Open(filepath.Join(dir, "src"), store.Options{})
	src.Put(bytes.NewReader(zipBody), "")
	src.PutEntry(store.Entry{URL: "http://127.0.0.1:9/example.test/dep/@v/v1.0.0.zip", SHA256: hexSHA(zipBody), Size: int64(len(zipBody)), ContentType: "application/zip"})
	src.Put(bytes.NewReader([]byte("unrelated")), "")

	export := filepath.Join(dir, "export")
	rep, err := ExportMaterials(src, r, export)
	if err == nil || rep.Exported != 1 || len(rep.Missing) != 1 || !strings.Contains(rep.Missing[0], "a.bin") {
		t.Fatalf("export with a missing body: %+v %v", rep, err)
	}
	src.Put(bytes.NewReader(httpsBody), "")
	if rep, err = ExportMaterials(src, r, export); err != nil || rep.Exported != 2 {
		t.Fatalf("export: %+v %v", rep, err)
	}
	if _, err := os.Stat(filepath.Join(export, MaterialsFile)); err != nil {
		t.Fatal(err)
	}
	exp, _ := store.Open(export, store.Options{})
	if exp.Has(hexSHA([]byte("unrelated"))) {
		t.Fatal("export copied a body the provenance does not list")
	}
	dst, _ := store.Open(filepath.Join(dir, "dst"), store.Options{})
	irep, err := ImportMaterials(dst, export)
	if err != nil || irep.Imported != 2 || irep.Entries != 1 {
		t.Fatalf("import: %+v %v", irep, err)
	}
	if e, err := dst.Lookup("GET", "http://127.0.0.1:9/example.test/dep/@v/v1.0.0.zip", nil); err != nil || e.ContentType != "application/zip" {
		t.Fatalf("imported entry %+v %v", e, err)
	}
	// A tampered export is refused blob by blob.
	p := filepath.Join(export, "blobs", "sha256", hexSHA(zipBody)[:2], hexSHA(zipBody))
	os.Chmod(p, 0o644)
	os.WriteFile(p, []byte("evil"), 0o644)
	dst2, _ := store.Open(filepath.Join(dir, "dst2"), store.Options{})
	irep, err = ImportMaterials(dst2, export)
	if err == nil || irep.Imported != 1 || dst2.Has(hexSHA(zipBody)) {
		t.Fatalf("tampered import: %+v %v", irep, err)
	}
}

// The lockfile check lands in the provenance, and the policy keys
// noUndeclaredFetches and noHashMismatches act on it.
func TestLockfilePolicy(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	build := func(lc *manifest.LockfileCheck) string {
		in := manifest.Input{
			InvocationID: "x", StartedOn: start, FinishedOn: start.Add(time.Minute), RunnerVersion: "test",
			Pipeline: manifest.File{Path: "cleanroom.yaml", SHA256: strings.Repeat("1", 64)},
			Source:   manifest.Source{TreeSHA256: strings.Repeat("2", 64)},
			Steps:    []string{"deps"},
			Subjects: []manifest.Subject{{Name: "app", SHA256: hexSHA([]byte("app"))}},
		}
		if lc != nil {
			in.Internal = map[string]any{"lockfileCheck": lc}
		}
		st, err := manifest.Build(in)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "p.json")
		if err := manifest.WriteFile(p, st); err != nil {
			t.Fatal(err)
		}
		return p
	}
	art := filepath.Join(t.TempDir(), "app")
	os.WriteFile(art, []byte("app"), 0o644)
	verify := func(prov string, pol manifest.Policy) error {
		st, err := manifest.ReadFile(prov)
		if err != nil {
			t.Fatal(err)
		}
		_, err = manifest.Verify(st, []string{art}, pol)
		return err
	}
	strict := manifest.Policy{NoUndeclaredFetches: true, NoHashMismatches: true}
	clean := build(&manifest.LockfileCheck{Lockfiles: []string{"go.sum"}, Checked: 3, Undeclared: []manifest.LockfileFinding{}, Mismatches: []manifest.LockfileFinding{}})
	if err := verify(clean, strict); err != nil {
		t.Fatalf("clean check: %v", err)
	}
	dirty := build(&manifest.LockfileCheck{
		Undeclared: []manifest.LockfileFinding{{Ecosystem: "go", Package: "example.test/x", Version: "v1.0.0"}},
		Mismatches: []manifest.LockfileFinding{{Ecosystem: "npm", Package: "left-pad", Version: "1.3.0"}},
	})
	if err := verify(dirty, manifest.Policy{}); err != nil {
		t.Fatalf("no policy: %v", err)
	}
	err := verify(dirty, manifest.Policy{NoUndeclaredFetches: true})
	if err == nil || !strings.Contains(err.Error(), "example.test/x@v1.0.0") || strings.Contains(err.Error(), "left-pad") {
		t.Fatalf("noUndeclaredFetches: %v", err)
	}
	if err := verify(dirty, manifest.Policy{NoHashMismatches: true}); err == nil || !strings.Contains(err.Error(), "left-pad@1.3.0") {
		t.Fatalf("noHashMismatches: %v", err)
	}
	if err := verify(build(nil), strict); err == nil || !strings.Contains(err.Error(), "no lockfile check") {
		t.Fatalf("statement without a check: %v", err)
	}
	yml := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(yml, []byte("noUndeclaredFetches: true\nnoHashMismatches: true\n"), 0o644)
	if pol, err := manifest.LoadPolicy(yml); err != nil || pol != strict {
		t.Fatalf("policy YAML: %+v %v", pol, err)
	}
}
