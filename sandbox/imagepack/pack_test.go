package imagepack

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestImageIsReproducible(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "bin"), 0o755)
	os.WriteFile(filepath.Join(root, "bin", "tool"), []byte("#!/bin/sh\necho hi\n"), 0o755)
	os.Symlink("tool", filepath.Join(root, "bin", "alias"))

	digest := func() string {
		img, err := Image(root, Options{Cmd: []string{"/bin/tool"}})
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d.String()
	}
	a := digest()
	// Touching timestamps must not change the digest.
	os.Chtimes(filepath.Join(root, "bin", "tool"), time.Unix(12345, 0), time.Unix(12345, 0))
	if b := digest(); a != b {
		t.Fatalf("digest changed: %s vs %s", a, b)
	}
	os.WriteFile(filepath.Join(root, "bin", "tool"), []byte("changed"), 0o755)
	if c := digest(); c == a {
		t.Fatal("digest did not change with content")
	}
}

func TestWriteArchives(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "f"), []byte("x"), 0o644)
	img, err := Image(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, w := range []func(string) error{
		func(p string) error { return WriteOCIArchive(p, img, "example.test/x:1") },
		func(p string) error { return WriteDockerArchive(p, img, "example.test/x:1") },
	} {
		p := filepath.Join(dir, "img.tar")
		if err := w(p); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
			t.Fatalf("archive not written: %v", err)
		}
		os.Remove(p)
	}
}
