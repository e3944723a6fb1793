package runner

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cleanroom-ci/cleanroom/internal/longpath"
)

func TestLocalEntryDropsEscapesAndCleans(t *testing.T) {
	for in, want := range map[string]string{
		"a/./b":            "a/b",
		"x/../.git/config": ".git/config", // then skipped as .git
		"a//b":             "a/b",
	} {
		if got, ok := localEntry(in); !ok || got != want {
			t.Errorf("localEntry(%q) = %q, %v; want %q, true", in, got, ok, want)
		}
	}
	for _, in := range []string{"../../pw", "..", "/etc/passwd", "a/../../b"} {
		if got, ok := localEntry(in); ok {
			t.Errorf("localEntry(%q) = %q kept, want dropped", in, got)
		}
	}
}

// An entry below a symlinked source directory is skipped (not read through
// the link), a symlink entry is copied as a link, and nothing is read or
// written outside either tree.
func TestCopierNeverFollowsSymlinkedParents(t *testing.T) {
	host := t.TempDir()
	os.MkdirAll(filepath.Join(host, ".ssh"), 0o700)
	os.WriteFile(filepath.Join(host, ".ssh", "id_rsa"), []byte("key"), 0o600)
	src, dst := t.TempDir(), t.TempDir()
	os.Symlink(host, filepath.Join(src, "sub"))
	os.WriteFile(filepath.Join(src, "f"), []byte("f"), 0o644)
	s, err := longpath.OpenRooted(src)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d, err := longpath.OpenRooted(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c := &copier{src: s, dst: d, dirs: map[string]bool{}}
	for _, rel := range []string{"sub/.ssh/id_rsa", "sub", "f"} {
		if _, err := c.copyEntry(sourceEntry{rel: rel}); err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
	}
	if fi, err := os.Lstat(filepath.Join(dst, "sub")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("sub not copied as a symlink: %v, %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(host, ".ssh", "id_rsa")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "f")); err != nil || string(b) != "f" {
		t.Errorf("f: %q, %v", b, err)
	}
	// Read through dst/sub (the link) would find the host's key; check the
	// copy did not write it into a real directory there.
	if ents, _ := os.ReadDir(filepath.Join(host, ".ssh")); len(ents) != 1 {
		t.Errorf("the host directory changed: %v", ents)
	}
	// An escaping entry that reached the copier anyway is refused by the
	// roots, neither read nor written.
	os.WriteFile(filepath.Join(filepath.Dir(src), "pw"), []byte("pw"), 0o600)
	defer os.Remove(filepath.Join(filepath.Dir(src), "pw"))
	if _, err := c.copyEntry(sourceEntry{rel: "../pw"}); err == nil {
		t.Error("../pw was copied")
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dst), "pw")); err == nil && filepath.Dir(dst) != filepath.Dir(src) {
		t.Error("../pw written outside the destination")
	}
}
