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
