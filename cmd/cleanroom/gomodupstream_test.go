package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The module proxy is derived from `go env GOPROXY` once per Go
// installation, not at every start.
func TestGoModUpstreamExecsGoEnvOnce(t *testing.T) {
	dir := t.TempDir()
	runs := filepath.Join(dir, "runs")
	fake := "#!/bin/sh\necho x >> " + runs + "\necho 'http://proxy.test/mod,direct'\n"
	if err := os.WriteFile(filepath.Join(dir, "go"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	t.Setenv("GOPROXY", "")
	t.Setenv("GOENV", filepath.Join(dir, "goenv"))
	cache := toolCacheDir(filepath.Join(dir, "state"))
	for i := range 3 {
		u, err := goModUpstream("", cache)
		if err != nil || u == nil || u.String() != "http://proxy.test/mod" {
			t.Fatalf("call %d: %v %v", i, u, err)
		}
	}
	b, _ := os.ReadFile(runs)
	if n := strings.Count(string(b), "x"); n != 1 {
		t.Fatalf("go env ran %d times for 3 starts, want 1", n)
	}
	// `go env -w` changes the answer: it is asked again.
	os.WriteFile(filepath.Join(dir, "goenv"), []byte("GOPROXY=off\n"), 0o644)
	goModUpstream("", cache)
	b, _ = os.ReadFile(runs)
	if n := strings.Count(string(b), "x"); n != 2 {
		t.Fatalf("after go env -w: %d runs, want 2", n)
	}
}
