package longpath

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// deepTree makes a file below 18 directories of 250-byte names (about
// 4.5 KB of path, beyond PATH_MAX) and returns its relative path.
func deepTree(t *testing.T, root string) string {
	t.Helper()
	name := strings.Repeat("d", 250)
	d, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	rel := ""
	for range 18 {
		rel = filepath.Join(rel, name)
		if err := d.Mkdir(rel, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f, err := d.OpenFile(filepath.Join(rel, "f"), os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	return filepath.Join(rel, "f")
}

func TestWalksAndOpensBeyondPathMax(t *testing.T) {
	root := t.TempDir()
	rel := deepTree(t, root)
	if _, err := os.Lstat(filepath.Join(root, rel)); err == nil {
		t.Skip("this kernel resolves paths beyond 4096 bytes; nothing to show")
	}
	d, _ := Open(root)
	defer d.Close()
	if _, err := d.Lstat(rel); err != nil {
		t.Fatalf("Lstat: %v", err)
	}
	var files int
	if err := d.WalkDir(func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() {
			files++
		}
		return nil
	}); err != nil || files != 1 {
		t.Fatalf("walk: %d files, %v", files, err)
	}
}

// A rooted Dir never leaves its directory, even on short paths: a parent
// that is a symlink to outside, or "..", is refused, not followed.
func TestRootedRefusesEscapesOnShortPaths(t *testing.T) {
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("host"), 0o600)
	root := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(root, "sub")); err != nil {
		t.Fatal(err)
	}
	d, err := OpenRooted(root)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.Lstat(filepath.Join("sub", "secret")); err == nil {
		t.Error("Lstat followed a parent symlink out of the directory")
	}
	if f, err := d.OpenFile(filepath.Join("sub", "secret"), os.O_RDONLY, 0); err == nil {
		f.Close()
		t.Error("OpenFile followed a parent symlink out of the directory")
	}
	if f, err := d.OpenFile(filepath.Join("..", filepath.Base(outside), "new"), os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
		f.Close()
		t.Error("OpenFile created a file outside through ..")
	}
	if err := d.Mkdir(filepath.Join("sub", "made"), 0o700); err == nil {
		t.Error("Mkdir went through a parent symlink")
	}
	if _, err := os.Stat(filepath.Join(outside, "made")); err == nil {
		t.Error("a directory was made outside")
	}
	// The plain Dir is the by-path fast case: it does follow (what the
	// rooted one exists to avoid).
	p, _ := Open(root)
	defer p.Close()
	if _, err := p.Lstat(filepath.Join("sub", "secret")); err != nil {
		t.Logf("plain Lstat: %v", err)
	}
}
