package userns

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cleanroom-ci/cleanroom/internal/testenv"
)

func TestLoadPoolDefaultAndOwnEntry(t *testing.T) {
	dir := t.TempDir()
	p, err := LoadPool(dir)
	if err != nil {
		t.Fatal(err)
	}
	if p.UIDBase != DefaultBase || p.GIDBase != DefaultBase || p.Slots != DefaultSlots {
		t.Fatalf("default pool %+v", p)
	}
	os.WriteFile(filepath.Join(dir, "subuid"), []byte("alice:100000:65536\ncleanroom:200000000:655360\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "subgid"), []byte("cleanroom:300000000:131072\n"), 0o644)
	if p, err = LoadPool(dir); err != nil {
		t.Fatal(err)
	}
	if p.UIDBase != 200000000 || p.GIDBase != 300000000 || p.Slots != 2 {
		t.Fatalf("own entry: %+v", p)
	}
}

func TestLoadPoolRefusesOverlap(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "subuid"), []byte("mallory:1000065536:65536\n"), 0o644)
	_, err := LoadPool(dir)
	if err == nil || !strings.Contains(err.Error(), "mallory") {
		t.Fatalf("overlap accepted: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "subuid"), []byte("broken line\n"), 0o644)
	if _, err := LoadPool(dir); err == nil || !strings.Contains(err.Error(), "subuid:1") {
		t.Fatalf("bad line: %v", err)
	}
}

func TestAcquireLowestFreeSlot(t *testing.T) {
	p := Pool{UIDBase: 1 << 30, GIDBase: 1 << 30, Slots: 2}
	dir := t.TempDir()
	a, err := p.Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.Index != 0 || b.Index != 1 || b.Range.HostUID != 1<<30+SlotSize {
		t.Fatalf("slots %d %d %+v", a.Index, b.Index, b.Range)
	}
	if _, err := p.Acquire(dir); err == nil {
		t.Fatal("third slot of two handed out")
	}
	a.Release()
	c, err := p.Acquire(dir)
	if err != nil || c.Index != 0 {
		t.Fatalf("released slot not reused: %v %v", c, err)
	}
	b.Release()
	c.Release()
}

// TestPinOwnsNetwork: the pinned network namespace belongs to the pinned
// user namespace, whose map sends container root to the range.
func TestPinOwnsNetwork(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	r := Range{HostUID: DefaultBase + 7*SlotSize, HostGID: DefaultBase + 7*SlotSize, Size: SlotSize}
	p, err := Pin(dir, "x", r, true)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Remove()
	netf, err := os.Open(p.NetPath)
	if err != nil {
		t.Fatal(err)
	}
	defer netf.Close()
	owner, err := unix.IoctlRetInt(int(netf.Fd()), unix.NS_GET_USERNS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(owner)
	var a, b unix.Stat_t
	unix.Fstat(owner, &a)
	unix.Stat(p.UserPath, &b)
	if a.Ino != b.Ino {
		t.Fatalf("network namespace owned by user namespace %d, want the pinned %d", a.Ino, b.Ino)
	}
	if err := p.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.UserPath); !os.IsNotExist(err) {
		t.Fatalf("pin left behind: %v", err)
	}
}

// TestIDMappedMount: through the idmapped mount, the owner's file is
// owned by the range's root.
func TestIDMappedMount(t *testing.T) {
	testenv.RequireRoot(t)
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), nil, 0o644)
	os.Chown(filepath.Join(src, "f"), 1234, 1234)
	dst := filepath.Join(t.TempDir(), "m")
	r := Range{HostUID: DefaultBase + 9*SlotSize, HostGID: DefaultBase + 9*SlotSize, Size: SlotSize}
	if err := IDMapped(src, dst, FileOwner{1234, 1234}, r); err != nil {
		t.Fatal(err)
	}
	defer Unmount(dst)
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dst, "f"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != r.HostUID || st.Gid != r.HostGID {
		t.Fatalf("through the mount: %d:%d, want %d:%d", st.Uid, st.Gid, r.HostUID, r.HostGID)
	}
	// Host root is not mapped by the mount: only the range's root (the
	// step's root) can create files through it.
	if err := os.WriteFile(filepath.Join(dst, "new"), nil, 0o644); !errors.Is(err, unix.EOVERFLOW) {
		t.Fatalf("host root created a file through the idmapped mount: %v", err)
	}
	if err := Unmount(dst); err != nil {
		t.Fatal(err)
	}
}

func TestShiftOwnerRoundTrip(t *testing.T) {
	testenv.RequireRoot(t)
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "a/b"), 0o755)
	os.WriteFile(filepath.Join(root, "a/b/f"), nil, 0o644)
	owner := FileOwner{1000, 1000}
	chownTree(root, func(uint32, uint32) (uint32, uint32, bool) { return 1000, 1000, true })
	s := ShiftOwner{Owner: owner, Range: Range{HostUID: DefaultBase, HostGID: DefaultBase, Size: SlotSize}}
	if err := s.In(root); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	unix.Stat(filepath.Join(root, "a/b/f"), &st)
	if st.Uid != DefaultBase {
		t.Fatalf("after In: owned by %d, want the range's root %d", st.Uid, DefaultBase)
	}
	os.WriteFile(filepath.Join(root, "made-inside"), nil, 0o644)
	os.Lchown(filepath.Join(root, "made-inside"), DefaultBase+5, DefaultBase+5)
	if err := s.Out(root); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"a", "a/b/f", "made-inside"} {
		var st unix.Stat_t
		unix.Stat(filepath.Join(root, p), &st)
		if st.Uid != 1000 || st.Gid != 1000 {
			t.Errorf("%s owned by %d:%d after Out, want 1000:1000", p, st.Uid, st.Gid)
		}
	}
}
