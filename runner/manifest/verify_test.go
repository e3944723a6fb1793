package manifest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	intoto "github.com/in-toto/attestation/go/v1"
)

// verifyFixture builds a workspace with two artifacts and a statement
// attesting them, with a clean egress record.
func verifyFixture(t *testing.T, mutate func(*Input)) (*intoto.Statement, []string) {
	t.Helper()
	ws, _ := workspace(t)
	write(t, filepath.Join(ws, "dist", "app"), "app-binary", 0o755)
	write(t, filepath.Join(ws, "dist", "app.sbom.json"), "{}", 0o644)
	subjects, err := MatchArtifacts(ws, []string{"dist/*"})
	if err != nil {
		t.Fatal(err)
	}
	in := sampleInput()
	in.Subjects = subjects
	in.Denied = nil
	in.Dependencies = in.Dependencies[:2] // drop the tunnel
	in.Images = append(in.Images[2:],     // only pinned images
		Image{Step: "build", Ref: "oci-archive:./images/builder.tar", Digest: hexOf("archive")})
	if mutate != nil {
		mutate(&in)
	}
	st, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	return st, []string{filepath.Join(ws, "dist", "app"), filepath.Join(ws, "dist", "app.sbom.json")}
}

var strictPolicy = Policy{
	BuilderID:               "https://ci.example.com/cleanroom@v1",
	SourceRepo:              "git@GitHub.com:example/app",
	NoDeniedEgress:          true,
	AllDependenciesDigested: true,
	ImagesPinned:            true,
}

func TestVerifyOK(t *testing.T) {
	st, paths := verifyFixture(t, nil)
	r, err := Verify(st, paths, strictPolicy)
	if err != nil {
		t.Fatalf("Verify: %v\n%s", err, r.Text())
	}
	if len(r.Artifacts) != 2 || !r.Artifacts[0].OK || !r.Artifacts[0].NameMatch || r.Artifacts[0].Subject != "dist/app" {
		t.Errorf("artifacts = %+v", r.Artifacts)
	}
	if r.SourceCommit != strings.Repeat("ab", 20) || r.SourceRepo != "https://github.com/example/app.git" {
		t.Errorf("source = %q %q", r.SourceRepo, r.SourceCommit)
	}
	if r.Dependencies != 2 || r.WithoutDigest != 0 || r.Denied != 0 || len(r.Images) != 2 {
		t.Errorf("report = %+v", r)
	}
	if !strings.Contains(r.Text(), "result:        verified") {
		t.Errorf("Text:\n%s", r.Text())
	}
	if _, err := json.Marshal(r); err != nil {
		t.Error(err)
	}
}

// The report lists every dependency with its digest and, under a policy,
// each check that held.
func TestVerifyListsDependenciesAndPassedChecks(t *testing.T) {
	st, paths := verifyFixture(t, func(in *Input) {
		in.Dependencies = append(in.Dependencies, Dependency{Step: "build", URL: "sumdb.example.org:443"})
	})
	pol := strictPolicy
	pol.AllDependenciesDigested = false
	r, err := Verify(st, paths, pol)
	if err != nil {
		t.Fatalf("Verify: %v\n%s", err, r.Text())
	}
	text := r.Text()
	for _, want := range []string{
		"dependencies:  3 fetched, 1 without digest\n" +
			"  https://goproxy.example.org/golang.org/x/sys/@v/v0.50.0.zip  sha256:" + hexOf("sys") + "\n" +
			"  https://objects.example.com/blob.tgz?X-Amz-Signature=REDACTED&v=2  sha256:" + hexOf("blob") + "\n" +
			"  sumdb.example.org:443  (no digest: content not seen)\n",
		"policy passed: 4\n" +
			"  OK   builderId: builder is \"https://ci.example.com/cleanroom@v1\"\n" +
			"  OK   sourceRepo: source is https://github.com/example/app.git at " + strings.Repeat("ab", 20) + "\n" +
			"  OK   noDeniedEgress: no egress connection was denied\n" +
			"  OK   imagesPinned: all 2 images are pinned by digest or are archives\n" +
			"result:        verified\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks\n%s\ngot:\n%s", want, text)
		}
	}
	if len(r.Fetched) != 3 || r.Fetched[2].SHA256 != "" || r.Fetched[0].SHA256 != hexOf("sys") {
		t.Errorf("fetched = %+v", r.Fetched)
	}
}

// A copy under another name verifies by digest and reports the name.
func TestVerifyRenamedArtifact(t *testing.T) {
	st, paths := verifyFixture(t, nil)
	cp := filepath.Join(t.TempDir(), "renamed")
	data, _ := os.ReadFile(paths[0])
	os.WriteFile(cp, data, 0o644)
	r, err := Verify(st, []string{cp}, Policy{})
	if err != nil {
		t.Fatal(err)
	}
	if a := r.Artifacts[0]; !a.OK || a.NameMatch || a.Subject != "dist/app" {
		t.Errorf("result = %+v", a)
	}
	if !strings.Contains(r.Text(), "attested as dist/app") {
		t.Errorf("Text:\n%s", r.Text())
	}
}

func TestVerifyTampered(t *testing.T) {
	st, paths := verifyFixture(t, nil)
	os.WriteFile(paths[0], []byte("app-binary-with-backdoor"), 0o755)
	r, err := Verify(st, paths, Policy{})
	if err == nil {
		t.Fatal("tampered artifact verified")
	}
	if r.Artifacts[0].OK || !r.Artifacts[1].OK {
		t.Errorf("artifacts = %+v", r.Artifacts)
	}
	if !strings.Contains(err.Error(), paths[0]) || !strings.Contains(r.Text(), "FAIL") {
		t.Errorf("error %v / text %s does not name the artifact", err, r.Text())
	}
	// A missing artifact is a failure too, not a crash.
	if _, err := Verify(st, []string{paths[0] + ".missing"}, Policy{}); err == nil {
		t.Error("missing artifact verified")
	}
}

func TestVerifyPolicyRules(t *testing.T) {
	cases := map[string]struct {
		mutate func(*Input)
		pol    Policy
		want   string
	}{
		"builder":     {nil, Policy{BuilderID: DefaultBuilderID}, "builder is"},
		"source repo": {nil, Policy{SourceRepo: "https://github.com/evil/app"}, "source repository is"},
		"no source": {func(in *Input) { in.Source = Source{TreeSHA256: hexOf("t")} },
			Policy{SourceRepo: "https://github.com/example/app"}, "no source repository"},
		"denied": {func(in *Input) {
			in.Denied = []Denied{{Step: "build", Host: "evil.example", Port: 443, Count: 4}}
		}, Policy{NoDeniedEgress: true}, "4 egress connections were denied"},
		"undigested": {func(in *Input) {
			in.Dependencies = append(in.Dependencies, Dependency{Step: "build", URL: "sumdb.example.org:443"})
		}, Policy{AllDependenciesDigested: true}, "sumdb.example.org:443"},
		"unpinned": {func(in *Input) {
			in.Images = append(in.Images, Image{Step: "test", Ref: "golang:1.26", Digest: hexOf("g")})
		}, Policy{ImagesPinned: true}, "golang:1.26"},
		"runtime": {func(in *Input) {
			in.Sandbox = map[string]any{"backend": "containerd", "runtime": "runc", "runtimeVersion": "1.1.5"}
		}, Policy{RequireRuntime: "runsc"}, `runtime is "runc", policy requires "runsc"`},
		"no runtime": {nil, Policy{RequireRuntime: "runsc"}, `runtime is "none recorded"`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			st, paths := verifyFixture(t, c.mutate)
			if _, err := Verify(st, paths, Policy{}); err != nil {
				t.Fatalf("fails without the rule: %v", err)
			}
			r, err := Verify(st, paths, c.pol)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want mentioning %q", err, c.want)
			}
			if len(r.Failures) != 1 {
				t.Errorf("failures = %q", r.Failures)
			}
		})
	}
}

func TestVerifyFailedRun(t *testing.T) {
	st, _ := verifyFixture(t, func(in *Input) { in.Subjects, in.FailedStep = nil, "test" })
	r, err := Verify(st, nil, Policy{})
	if err == nil || !strings.Contains(err.Error(), `failed at step "test"`) || r.FailedStep != "test" {
		t.Fatalf("err = %v, report = %+v", err, r)
	}
}

// Every failing check is listed, not just the first.
func TestVerifyListsAllFailures(t *testing.T) {
	st, paths := verifyFixture(t, func(in *Input) {
		in.Denied = []Denied{{Step: "build", Host: "x", Port: 1, Count: 1}}
	})
	os.WriteFile(paths[1], []byte("changed"), 0o644)
	r, err := Verify(st, paths, Policy{BuilderID: "https://other", NoDeniedEgress: true})
	if err == nil || len(r.Failures) != 3 {
		t.Fatalf("failures = %q", r.Failures)
	}
	for _, f := range r.Failures {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error lacks %q", f)
		}
	}
}

func TestVerifyForeignBuildType(t *testing.T) {
	st, paths := verifyFixture(t, nil)
	bd := st.Predicate.Fields["buildDefinition"].GetStructValue()
	bd.Fields["buildType"] = structString("https://example.com/other")
	if _, err := Verify(st, paths, Policy{}); err == nil || !strings.Contains(err.Error(), "buildType") {
		t.Errorf("err = %v", err)
	}
}

func TestNormRepo(t *testing.T) {
	same := []string{
		"https://github.com/o/r", "https://github.com/o/r.git", "git+https://github.com/o/r",
		"git@github.com:o/r.git", "ssh://git@GitHub.com/o/r", "github.com/o/r/", "https://user:pw@github.com/o/r",
	}
	for _, s := range same {
		if got := normRepo(s); got != "github.com/o/r" {
			t.Errorf("normRepo(%q) = %q", s, got)
		}
	}
	if normRepo("https://github.com/o/r2") == normRepo("https://github.com/o/r") {
		t.Error("different repos compare equal")
	}
}

func TestVerifyFreshWorkspacePolicy(t *testing.T) {
	pol := Policy{FreshWorkspace: true}
	for _, c := range []struct {
		internal map[string]any
		fails    string
	}{
		{map[string]any{"workspace": map[string]any{"mode": "fresh", "hermetic": true}}, ""},
		{map[string]any{"workspace": map[string]any{"mode": "reused", "hermetic": false}}, `the workspace was "reused"`},
		{nil, "does not record how the workspace was made"},
	} {
		st, paths := verifyFixture(t, func(in *Input) { in.Internal = c.internal })
		_, err := Verify(st, paths, pol)
		switch {
		case c.fails == "" && err != nil:
			t.Errorf("%v: %v", c.internal, err)
		case c.fails != "" && (err == nil || !strings.Contains(err.Error(), c.fails)):
			t.Errorf("%v: want a failure with %q, got %v", c.internal, c.fails, err)
		}
	}
}

// A service's image is an image dependency with the service's step and
// alias; verify lists it, and the pinning policy covers it like a step's.
func TestVerifyServiceImages(t *testing.T) {
	redis := "registry.example.org/redis@sha256:" + hexOf("redis-index")
	st, paths := verifyFixture(t, func(in *Input) {
		in.Images = append(in.Images,
			Image{Step: "test", Service: "cache", Ref: redis, Digest: hexOf("redis")},
			Image{Step: "e2e", Service: "cache", Ref: redis, Digest: hexOf("redis")},
			Image{Step: "test", Service: "db", Ref: "registry.example.org/postgres:16", Digest: hexOf("pg")})
	})
	var found int
	prov, err := Provenance(st)
	if err != nil {
		t.Fatal(err)
	}
	for _, rd := range prov.GetBuildDefinition().GetResolvedDependencies() {
		switch rd.GetName() {
		case redis:
			found++
			b, _ := json.Marshal(rd.GetAnnotations().AsMap())
			if want := `{"kind":"image","services":[{"alias":"cache","step":"e2e"},{"alias":"cache","step":"test"}],"steps":[]}`; string(b) != want {
				t.Errorf("annotations %s, want %s", b, want)
			}
			if rd.GetDigest()["sha256"] != hexOf("redis") {
				t.Errorf("digest %v", rd.GetDigest())
			}
		case "registry.example.org/postgres:16":
			found++
		}
	}
	if found != 2 {
		t.Fatalf("service images missing from resolvedDependencies")
	}
	r, err := Verify(st, paths, strictPolicy)
	if err == nil || !strings.Contains(err.Error(), "registry.example.org/postgres:16") {
		t.Errorf("the unpinned service image passes ImagesPinned: %v", err)
	}
	want := []ServiceImage{ // in the order of resolvedDependencies (by ref)
		{Step: "test", Alias: "db", Image: "registry.example.org/postgres:16@sha256:" + hexOf("pg")},
		{Step: "e2e", Alias: "cache", Image: redis},
		{Step: "test", Alias: "cache", Image: redis},
	}
	if b, w := must(json.Marshal(r.Services)), must(json.Marshal(want)); string(b) != string(w) {
		t.Errorf("report services %s, want %s", b, w)
	}
	if !strings.Contains(r.Text(), "services:      3\n  db (step test): registry.example.org/postgres:16@sha256:") || !strings.Contains(r.Text(), "  cache (step e2e): "+redis+"\n") {
		t.Errorf("Text:\n%s", r.Text())
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
