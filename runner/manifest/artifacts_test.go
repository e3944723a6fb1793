package manifest

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// workspace returns a fresh workspace inside its own parent directory, so
// tests can put "outside" files next to it.
func workspace(t *testing.T) (ws, parent string) {
	t.Helper()
	parent = t.TempDir()
	ws = filepath.Join(parent, "ws")
	if err := os.Mkdir(ws, 0o755); err != nil {
		t.Fatal(err)
	}
	return ws, parent
}

func names(subjects []Subject) []string {
	var out []string
	for _, s := range subjects {
		out = append(out, s.Name)
	}
	return out
}

func TestMatchArtifactsFiles(t *testing.T) {
	ws, _ := workspace(t)
	write(t, filepath.Join(ws, "dist", "b.tar"), "b", 0o644)
	write(t, filepath.Join(ws, "dist", "a.tar"), "a", 0o644)
	write(t, filepath.Join(ws, "dist", "notes.md"), "n", 0o644)
	got, err := MatchArtifacts(ws, []string{"dist/*.tar", "dist/a.tar"})
	if err != nil {
		t.Fatal(err)
	}
	want := []Subject{{"dist/a.tar", hexOf("a")}, {"dist/b.tar", hexOf("b")}}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestMatchArtifactsDoubleStar(t *testing.T) {
	ws, _ := workspace(t)
	write(t, filepath.Join(ws, "top.txt"), "1", 0o644)
	write(t, filepath.Join(ws, "a", "b", "deep.txt"), "2", 0o644)
	write(t, filepath.Join(ws, "a", "b", "deep.bin"), "3", 0o644)
	write(t, filepath.Join(ws, "out", "x", "y", "z"), "4", 0o644)
	got, err := MatchArtifacts(ws, []string{"**/*.txt", "out/**", "a/**/deep.bin"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a/b/deep.bin", "a/b/deep.txt", "out/x/y/z", "top.txt"}
	if !slices.Equal(names(got), want) {
		t.Errorf("got %v, want %v", names(got), want)
	}
}

func TestMatchArtifactsSymlinkInside(t *testing.T) {
	ws, _ := workspace(t)
	write(t, filepath.Join(ws, "build", "app"), "binary", 0o755)
	symlink(t, "../build/app", filepath.Join(ws, "dist", "app"))
	symlink(t, "build", filepath.Join(ws, "out")) // symlinked dir, inside
	got, err := MatchArtifacts(ws, []string{"dist/app"})
	if err != nil {
		t.Fatal(err)
	}
	want := []Subject{{"dist/app", hexOf("binary")}}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	// A symlinked directory on the way is refused, not followed: the
	// fresh copy excludes artifacts lexically, so through "out" a glob
	// would reach an untracked build/app the copy let in.
	if _, err := MatchArtifacts(ws, []string{"out/*"}); err == nil || !strings.Contains(err.Error(), "out is a symlink to a directory") {
		t.Errorf("out/* through a symlinked directory: err = %v, want a refusal naming out", err)
	}
	if _, err := MatchArtifacts(ws, []string{"out/app"}); err == nil {
		t.Error("out/app through a symlinked directory was matched")
	}
	// "**" does not descend into the symlinked directory.
	got, err = MatchArtifacts(ws, []string{"**/app"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"build/app", "dist/app"}; !slices.Equal(names(got), want) {
		t.Errorf("** got %v, want %v", names(got), want)
	}
}

func expectOutside(t *testing.T, err error, name string) {
	t.Helper()
	if !errors.Is(err, ErrOutsideWorkspace) {
		t.Fatalf("err = %v, want ErrOutsideWorkspace", err)
	}
	if !strings.Contains(err.Error(), name) {
		t.Errorf("error %q does not name %s", err, name)
	}
}

func TestMatchArtifactsSymlinkAbsoluteOutside(t *testing.T) {
	ws, parent := workspace(t)
	write(t, filepath.Join(parent, "secret"), "s", 0o600)
	symlink(t, filepath.Join(parent, "secret"), filepath.Join(ws, "dist", "evil"))
	_, err := MatchArtifacts(ws, []string{"dist/*"})
	expectOutside(t, err, "dist/evil")
}

func TestMatchArtifactsSymlinkRelativeOutside(t *testing.T) {
	ws, parent := workspace(t)
	write(t, filepath.Join(parent, "secret"), "s", 0o600)
	symlink(t, "../../secret", filepath.Join(ws, "dist", "evil"))
	_, err := MatchArtifacts(ws, []string{"dist/**"})
	expectOutside(t, err, "dist/evil")
}

func TestMatchArtifactsThroughSymlinkedDirOutside(t *testing.T) {
	ws, parent := workspace(t)
	write(t, filepath.Join(parent, "elsewhere", "x.txt"), "s", 0o600)
	symlink(t, filepath.Join(parent, "elsewhere"), filepath.Join(ws, "dist"))
	for _, g := range []string{"dist/*.txt", "dist/x.txt", "*/x.txt"} {
		_, err := MatchArtifacts(ws, []string{g})
		expectOutside(t, err, "dist")
	}
	// A symlinked directory pointing outside is refused under "**" too.
	symlink(t, filepath.Join(parent, "elsewhere"), filepath.Join(ws, "out", "sub"))
	_, err := MatchArtifacts(ws, []string{"out/**"})
	expectOutside(t, err, "out/sub")
}

// A sibling directory sharing the workspace's name as a prefix is outside.
func TestMatchArtifactsPrefixSibling(t *testing.T) {
	ws, parent := workspace(t)
	write(t, filepath.Join(parent, "ws2", "file"), "s", 0o600)
	symlink(t, "../ws2/file", filepath.Join(ws, "a"))
	symlink(t, filepath.Join(parent, "ws2", "file"), filepath.Join(ws, "b"))
	for _, g := range []string{"a", "b"} {
		_, err := MatchArtifacts(ws, []string{g})
		expectOutside(t, err, g)
	}
}

// A workspace given through a symlink still accepts links inside it.
func TestMatchArtifactsWorkspaceViaSymlink(t *testing.T) {
	ws, parent := workspace(t)
	write(t, filepath.Join(ws, "f"), "x", 0o644)
	symlink(t, filepath.Join(ws, "f"), filepath.Join(ws, "abs-link"))
	symlink(t, ws, filepath.Join(parent, "ws-link"))
	got, err := MatchArtifacts(filepath.Join(parent, "ws-link"), []string{"*"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"abs-link", "f"}; !slices.Equal(names(got), want) {
		t.Errorf("got %v, want %v", names(got), want)
	}
}

func TestMatchArtifactsErrors(t *testing.T) {
	ws, _ := workspace(t)
	write(t, filepath.Join(ws, "dist", "a"), "a", 0o644)
	symlink(t, "missing", filepath.Join(ws, "dangling"))
	cases := map[string]string{
		"nothing/*.tar":  `"nothing/*.tar" matched no files`,
		"dist":           `use "dist/**"`,
		"/abs/*":         "absolute",
		"../ws/dist/a":   "'..'",
		"dist/../dist/a": "'..'",
		"./dist/a":       "'.'",
		"dist//a":        "empty",
		"dist/a**":       "whole path segment",
		"dist/[":         "syntax error",
		"dangling":       "dangling symlink",
		"":               "empty",
	}
	for glob, want := range cases {
		_, err := MatchArtifacts(ws, []string{glob})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("glob %q: err = %v, want mentioning %q", glob, err, want)
		}
	}
}

func TestMatchGlobIsLexical(t *testing.T) {
	for _, c := range []struct {
		glob, rel string
		want      bool
	}{
		{"out/f", "out/f", true},
		{"out/*", "out/f", true},
		{"out/*", "out/a/f", false},
		{"out/**", "out/a/f", true},
		{"**/app", "app", true},
		{"**/app", "a/b/app", true},
		{"dist/*.tar", "dist/x.tgz", false},
	} {
		if got := NewGlobSet([]string{c.glob}).Match(c.rel); got != c.want {
			t.Errorf("glob %q matches %q = %v", c.glob, c.rel, got)
		}
	}
	// A set matches when any of its globs does; a glob that does not
	// compile matches nothing and does not spoil the others.
	s := NewGlobSet([]string{"dist/[", "../out/*", "out/*", "**/app"})
	if len(s) != 2 || !s.Match("out/f") || !s.Match("x/app") || s.Match("dist/[") || s.Match("y/z") {
		t.Errorf("set of %d globs", len(s))
	}
}
