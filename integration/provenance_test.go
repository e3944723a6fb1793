package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

type statement struct {
	Subject []struct {
		Name   string            `json:"name"`
		Digest map[string]string `json:"digest"`
	} `json:"subject"`
	Predicate struct {
		BuildDefinition struct {
			InternalParameters   map[string]any `json:"internalParameters"`
			ResolvedDependencies []struct {
				URI         string            `json:"uri"`
				Name        string            `json:"name"`
				Digest      map[string]string `json:"digest"`
				Annotations map[string]any    `json:"annotations"`
			} `json:"resolvedDependencies"`
		} `json:"buildDefinition"`
		RunDetails struct {
			Byproducts []struct {
				Name string `json:"name"`
			} `json:"byproducts"`
		} `json:"runDetails"`
	} `json:"predicate"`
}

func (e *env) provenance() (statement, []byte) {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.dir, ".cleanroom", "provenance.intoto.json"))
	if err != nil {
		e.t.Fatal(err)
	}
	var st statement
	if err := json.Unmarshal(b, &st); err != nil {
		e.t.Fatal(err)
	}
	return st, b
}

func TestProvenanceListsInputsAndVerifies(t *testing.T) {
	e := newEnv(t)
	git := func(args ...string) {
		cmd := exec.Command("git", append([]string{"-C", e.dir, "-c", "user.name=t", "-c", "user.email=t@example.test"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	e.pipeline(`version: 1
image: IMAGE
env: {API_TOKEN: "pipeline-secret-value"}
steps:
  - name: build
    run: mkdir -p out && echo built > out/app && echo notes > out/notes.txt
artifacts: ["out/*"]
`)
	git("init", "-q")
	git("remote", "add", "origin", "https://git.example.test/team/app.git")
	git("add", "cleanroom.yaml")
	git("commit", "-qm", "init")
	r := e.run([]string{"SIGSTORE_ID_TOKEN=runner-secret-token"}, "run")
	if r.code != 0 {
		t.Fatalf("%s", r)
	}
	st, raw := e.provenance()
	if len(st.Subject) != 2 || st.Subject[0].Name != "out/app" {
		t.Fatalf("subjects %+v", st.Subject)
	}
	sum := sha256.Sum256([]byte("built\n"))
	if st.Subject[0].Digest["sha256"] != hex.EncodeToString(sum[:]) {
		t.Fatalf("subject digest %v", st.Subject[0].Digest)
	}
	kinds := map[string]bool{}
	for _, d := range st.Predicate.BuildDefinition.ResolvedDependencies {
		kinds[d.Annotations["kind"].(string)] = true
		if d.Annotations["kind"] == "source" && (len(d.Digest["gitCommit"]) != 40 || !strings.Contains(d.URI, "git.example.test/team/app")) {
			t.Fatalf("source dependency %+v", d)
		}
		if d.Annotations["kind"] == "image" && len(d.Digest["sha256"]) != 64 {
			t.Fatalf("image without digest: %+v", d)
		}
	}
	for _, k := range []string{"source", "workspace", "pipeline", "image"} {
		if !kinds[k] {
			t.Errorf("no %s dependency in %s", k, raw)
		}
	}
	if len(st.Predicate.RunDetails.Byproducts) < 3 {
		t.Errorf("byproducts %+v", st.Predicate.RunDetails.Byproducts)
	}

	// Secrets never reach an output file.
	filepath.Walk(filepath.Join(e.dir, ".cleanroom"), func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		b, _ := os.ReadFile(p)
		for _, secret := range []string{"pipeline-secret-value", "runner-secret-token"} {
			if strings.Contains(string(b), secret) {
				t.Errorf("%s contains a secret value", p)
			}
		}
		return nil
	})

	prov := filepath.Join(e.dir, ".cleanroom", "provenance.intoto.json")
	v := e.run(nil, "verify", filepath.Join(e.dir, "out/app"), "--provenance", prov)
	if v.code != 0 || !strings.Contains(v.stdout, "builder") {
		t.Fatalf("verify: %s", v)
	}
	os.WriteFile(filepath.Join(e.dir, "out/app"), []byte("tampered\n"), 0o644)
	v = e.run(nil, "verify", filepath.Join(e.dir, "out/app"), "--provenance", prov)
	if v.code == 0 {
		t.Fatalf("verify accepted a tampered artifact: %s", v)
	}
}

func TestProvenanceOfFailedRunHasNoSubjects(t *testing.T) {
	e := newEnv(t)
	e.pipeline(`version: 1
image: IMAGE
steps:
  - name: build
    run: mkdir -p out && echo x > out/app && exit 3
artifacts: ["out/app"]
`)
	if r := e.run(nil, "run"); r.code != 1 {
		t.Fatalf("%s", r)
	}
	st, raw := e.provenance()
	if len(st.Subject) != 0 || st.Predicate.BuildDefinition.InternalParameters["failedStep"] != "build" {
		t.Fatalf("failed-run provenance: %s", raw)
	}
}

func TestArtifactSymlinkOutsideWorkspaceIsRefused(t *testing.T) {
	e := newEnv(t)
	e.pipeline(`version: 1
image: IMAGE
steps:
  - name: build
    run: mkdir -p out && ln -sf /etc/shadow out/app
artifacts: ["out/app"]
`)
	r := e.run(nil, "run", "--output", "json")
	if r.code != 1 || !strings.Contains(r.stdout, "out/app") {
		t.Fatalf("%s", r)
	}
	e.pipeline(`version: 1
image: IMAGE
steps:
  - name: build
    run: "true"
artifacts: ["dist/*.tar.gz"]
`)
	r = e.run(nil, "run")
	if r.code != 1 || !strings.Contains(r.stdout+r.stderr, "dist/*.tar.gz") {
		t.Fatalf("glob matching nothing: %s", r)
	}
}
