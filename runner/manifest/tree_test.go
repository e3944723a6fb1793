package manifest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // umask-proof
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
}

func digest(t *testing.T, root string, opts ...TreeOption) string {
	t.Helper()
	d, _, err := TreeDigest(context.Background(), root, 0, opts...)
	if err != nil {
		t.Fatalf("TreeDigest: %v", err)
	}
	return d
}

// The listing format is documented; recompute it by hand.
func TestTreeDigestListing(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "a"), "x", 0o644)
	write(t, filepath.Join(root, "b", "c"), "y", 0o755)
	os.Chmod(filepath.Join(root, "b"), 0o755)
	os.Mkdir(filepath.Join(root, "e"), 0o700)
	os.Chmod(filepath.Join(root, "e"), 0o700)
	write(t, filepath.Join(root, "tab\tname"), "", 0o600)
	symlink(t, "a", filepath.Join(root, "link"))
	write(t, filepath.Join(root, ".git", "HEAD"), "ref", 0o644)

	listing := fmt.Sprintf("a\t100644\t%s\nb\t040755\t-\nb/c\t100755\t%s\ne\t040700\t-\nlink\t120777\ta\ntab\\tname\t100600\t%s\n",
		hexOf("x"), hexOf("y"), hexOf(""))
	sum := sha256.Sum256([]byte(listing))
	got, n, err := TreeDigest(context.Background(), root, 3)
	if err != nil {
		t.Fatal(err)
	}
	if want := hex.EncodeToString(sum[:]); got != want {
		t.Errorf("digest %s, want %s for listing:\n%s", got, want, listing)
	}
	if n != 6 {
		t.Errorf("entries = %d, want 6", n)
	}
}

func TestTreeDigestDeterministic(t *testing.T) {
	root := t.TempDir()
	for i := range 300 {
		write(t, filepath.Join(root, fmt.Sprintf("d%d", i%7), fmt.Sprintf("f%03d", i)), fmt.Sprint(i), 0o644)
	}
	want := digest(t, root)
	for _, workers := range []int{1, 2, 5, 32} {
		got, n, err := TreeDigest(context.Background(), root, workers)
		if err != nil || got != want || n != 307 {
			t.Errorf("workers=%d: %s, %d, %v; want %s, 307", workers, got, n, err, want)
		}
	}
}

func TestTreeDigestChanges(t *testing.T) {
	mutations := map[string]func(root string){
		"content":     func(r string) { os.WriteFile(filepath.Join(r, "f"), []byte("changed"), 0o644) },
		"mode":        func(r string) { os.Chmod(filepath.Join(r, "f"), 0o755) },
		"rename":      func(r string) { os.Rename(filepath.Join(r, "f"), filepath.Join(r, "g")) },
		"empty dir":   func(r string) { os.Mkdir(filepath.Join(r, "new"), 0o755) },
		"link target": func(r string) { os.Remove(filepath.Join(r, "l")); os.Symlink("elsewhere", filepath.Join(r, "l")) },
		"dir mode":    func(r string) { os.Chmod(filepath.Join(r, "d"), 0o700) },
	}
	for name, mutate := range mutations {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			write(t, filepath.Join(root, "f"), "content", 0o644)
			write(t, filepath.Join(root, "d", "x"), "x", 0o644)
			os.Chmod(filepath.Join(root, "d"), 0o755)
			symlink(t, "f", filepath.Join(root, "l"))
			before := digest(t, root)
			mutate(root)
			if digest(t, root) == before {
				t.Errorf("digest unchanged")
			}
		})
	}
}

func TestTreeDigestSymlinkNotFollowed(t *testing.T) {
	outside := t.TempDir()
	write(t, filepath.Join(outside, "secret"), "one", 0o644)
	root := t.TempDir()
	symlink(t, filepath.Join(outside, "secret"), filepath.Join(root, "file-link"))
	symlink(t, outside, filepath.Join(root, "dir-link"))
	before, n, err := TreeDigest(context.Background(), root, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("entries = %d, want 2 (links listed, not descended)", n)
	}
	write(t, filepath.Join(outside, "secret"), "two", 0o644)
	write(t, filepath.Join(outside, "more"), "x", 0o644)
	if digest(t, root) != before {
		t.Errorf("digest followed a symlink")
	}
}

func TestTreeDigestExcludes(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "src"), "s", 0o644)
	base := digest(t, root)
	write(t, filepath.Join(root, ".git", "HEAD"), "h", 0o644)
	write(t, filepath.Join(root, ".cleanroom", "out", "log"), "l", 0o644)
	if digest(t, root) != base {
		t.Errorf("default exclusions not applied")
	}
	if digest(t, root, WithExcludes()) == base {
		t.Errorf("WithExcludes() still excluded something")
	}
	if digest(t, root, WithExcludes(".git", ".cleanroom/out/")) != digest(t, root, WithExcludes(".git", ".cleanroom/out")) {
		t.Errorf("exclusions not normalised")
	}
	for _, bad := range []string{"/abs", "..", "../x", "."} {
		if _, _, err := TreeDigest(context.Background(), root, 0, WithExcludes(bad)); err == nil {
			t.Errorf("exclusion %q accepted", bad)
		}
	}
}

func TestTreeDigestCancelled(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "f"), "x", 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := TreeDigest(ctx, root, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func TestTreeDigestErrors(t *testing.T) {
	root := t.TempDir()
	write(t, filepath.Join(root, "f"), "x", 0o644)
	if _, _, err := TreeDigest(context.Background(), filepath.Join(root, "f"), 0); err == nil {
		t.Errorf("file as root accepted")
	}
	if _, _, err := TreeDigest(context.Background(), filepath.Join(root, "missing"), 0); err == nil {
		t.Errorf("missing root accepted")
	}
	if os.Geteuid() != 0 { // root reads anything
		os.Chmod(filepath.Join(root, "f"), 0)
		if _, _, err := TreeDigest(context.Background(), root, 0); err == nil {
			t.Errorf("unreadable file ignored")
		}
	}
}

func TestHashFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	write(t, p, "abc", 0o644)
	sum, n, err := HashFile(p)
	if err != nil || n != 3 || sum != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Errorf("HashFile = %s, %d, %v", sum, n, err)
	}
	if _, _, err := HashFile(p + ".missing"); err == nil {
		t.Errorf("missing file hashed")
	}
}

func TestTreeDigestWalksBeyondPathMax(t *testing.T) {
	root := t.TempDir()
	name := strings.Repeat("d", 250)
	// Built bottom-up with short paths: renaming never needs the long one.
	cur := filepath.Join(root, "t")
	os.MkdirAll(cur, 0o755)
	os.WriteFile(filepath.Join(cur, "f"), []byte("deep"), 0o644)
	for range 18 {
		tmp := filepath.Join(root, "u")
		os.Mkdir(tmp, 0o755)
		if err := os.Rename(cur, filepath.Join(tmp, name)); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, cur); err != nil {
			t.Fatal(err)
		}
	}
	_, n, err := TreeDigest(context.Background(), root, 0)
	if err != nil || n != 18+2 {
		t.Fatalf("TreeDigest: %d entries, %v", n, err)
	}
}
