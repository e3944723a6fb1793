package toolcache

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tool writes a script that counts its runs in a file next to it.
func tool(t *testing.T, dir, answer string) (name, runs string) {
	runs = filepath.Join(dir, "runs")
	name = filepath.Join(dir, "fake-tool")
	script := "#!/bin/sh\necho x >> " + runs + "\necho " + answer + "\n"
	if err := os.WriteFile(name, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return name, runs
}

func countRuns(t *testing.T, runs string) int {
	b, _ := os.ReadFile(runs)
	return strings.Count(string(b), "x")
}

func TestOutputCachedUntilToolOrDepChanges(t *testing.T) {
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	name, runs := tool(t, dir, "v1")
	dep := filepath.Join(dir, "env")
	os.WriteFile(dep, []byte("A=1"), 0o644)

	for i := range 3 {
		out, err := Output(cache, name, []string{"--version"}, dep)
		if err != nil || strings.TrimSpace(string(out)) != "v1" {
			t.Fatalf("call %d: %q %v", i, out, err)
		}
	}
	if n := countRuns(t, runs); n != 1 {
		t.Fatalf("tool ran %d times for 3 calls, want 1", n)
	}
	// Other arguments are another entry.
	Output(cache, name, []string{"env"}, dep)
	if n := countRuns(t, runs); n != 2 {
		t.Fatalf("after other args: %d runs, want 2", n)
	}
	// An upgraded tool (new content, new mtime) is asked again.
	tool(t, dir, "v2")
	future := time.Now().Add(time.Minute)
	os.Chtimes(name, future, future)
	out, _ := Output(cache, name, []string{"--version"}, dep)
	if strings.TrimSpace(string(out)) != "v2" {
		t.Fatalf("after upgrade: %q, want v2", out)
	}
	// So is a tool whose configuration changed.
	os.WriteFile(dep, []byte("A=22"), 0o644)
	Output(cache, name, []string{"--version"}, dep)
	if n := countRuns(t, runs); n != 4 {
		t.Fatalf("after the dependency changed: %d runs, want 4", n)
	}
}

func TestOutputFailureNotCached(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "failing")
	os.WriteFile(name, []byte("#!/bin/sh\necho x >> "+filepath.Join(dir, "runs")+"\nexit 3\n"), 0o755)
	for range 2 {
		if _, err := Output(filepath.Join(dir, "cache"), name, nil); err == nil {
			t.Fatal("a failing tool returned no error")
		}
	}
	if n := countRuns(t, filepath.Join(dir, "runs")); n != 2 {
		t.Fatalf("failing tool ran %d times, want 2 (never cached)", n)
	}
}
