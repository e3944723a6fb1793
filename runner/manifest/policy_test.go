package manifest

import (
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"
)

func structString(s string) *structpb.Value { return structpb.NewStringValue(s) }

func TestLoadPolicy(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "policy.yaml")
	os.WriteFile(p, []byte(`builderId: https://ci.example.com/cleanroom@v1
sourceRepo: https://github.com/example/app
noDeniedEgress: true
allDependenciesDigested: true
imagesPinned: false
`), 0o644)
	got, err := LoadPolicy(p)
	if err != nil {
		t.Fatal(err)
	}
	want := Policy{BuilderID: "https://ci.example.com/cleanroom@v1", SourceRepo: "https://github.com/example/app",
		NoDeniedEgress: true, AllDependenciesDigested: true}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestLoadPolicyStrict(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"unknown key":   "noDeniedEgres: true\n",
		"duplicate key": "imagesPinned: true\nimagesPinned: false\n",
		"wrong type":    "imagesPinned: [1]\n",
	} {
		p := filepath.Join(dir, "p.yaml")
		os.WriteFile(p, []byte(content), 0o644)
		if _, err := LoadPolicy(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := LoadPolicy(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("missing file accepted")
	}
}
