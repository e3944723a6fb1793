package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteReplacesOrLeavesAlone(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f.json")
	if err := WriteFile(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, 0o644, func(w io.Writer) error {
		w.Write([]byte("half"))
		return errors.New("writer failed")
	}); err == nil {
		t.Fatal("a failed write reported success")
	}
	b, _ := os.ReadFile(p)
	fi, _ := os.Stat(p)
	if string(b) != "one" || fi.Mode().Perm() != 0o600 {
		t.Fatalf("after a failed write: %q %v", b, fi.Mode())
	}
	src := filepath.Join(dir, "src")
	os.WriteFile(src, []byte("two"), 0o600)
	if err := Copy(src, p, 0o644); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(p)
	fi, _ = os.Stat(p)
	if string(b) != "two" || fi.Mode().Perm() != 0o644 {
		t.Fatalf("after copy: %q %v", b, fi.Mode())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Fatalf("temporary files left: %v", ents)
	}
}

// Inside a root, a planted symlink leads nowhere: neither the directory on
// the way nor the target name is followed out of it.
func TestWriteInStaysInsideTheRoot(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	os.Symlink(outside, filepath.Join(dir, "sub"))
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	data := func(w io.Writer) error { _, err := w.Write([]byte("x")); return err }
	if err := WriteIn(root, "sub/f", 0o644, data); err == nil {
		t.Fatal("wrote through a symlink out of the root")
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("files appeared outside the root: %v", ents)
	}
	if err := WriteIn(root, "f", 0o640, data); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "f"))
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("%v %v", fi, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Fatalf("temporary files left: %v", ents)
	}
}
