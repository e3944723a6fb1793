package userns

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	chownTree(context.Background(), root, false, func(uint32, uint32) (uint32, uint32, bool) { return 1000, 1000, true })
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

func testRange() Range { return Range{HostUID: DefaultBase, HostGID: DefaultBase, Size: SlotSize} }

func ownerAndMode(t *testing.T, path string) (uint32, uint32, uint32) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Uid, st.Gid, st.Mode
}

// TestShiftOwnerOutClearsSetID: what Out gives to the owner keeps no
// setuid or setgid bit. With a root-owned workspace the owner is host
// root: a bit put back after the chown would be a setuid-root file the
// step planted on the host.
func TestShiftOwnerOutClearsSetID(t *testing.T) {
	testenv.RequireRoot(t)
	root := t.TempDir()
	r := testRange()
	os.Mkdir(filepath.Join(root, "d"), 0o755)
	os.WriteFile(filepath.Join(root, "d/suid"), []byte("x"), 0o755)
	os.WriteFile(filepath.Join(root, "sgid"), []byte("x"), 0o755)
	for p, mode := range map[string]os.FileMode{"d": 0o755 | os.ModeSetgid, "d/suid": 0o755 | os.ModeSetuid | os.ModeSetgid, "sgid": 0o755 | os.ModeSetgid} {
		os.Lchown(filepath.Join(root, p), int(r.HostUID+5), int(r.HostGID+5))
		os.Chmod(filepath.Join(root, p), mode)
	}
	if err := (ShiftOwner{Owner: FileOwner{0, 0}, Range: r}).Out(root); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"d", "d/suid", "sgid"} {
		uid, gid, mode := ownerAndMode(t, filepath.Join(root, p))
		if uid != 0 || gid != 0 {
			t.Errorf("%s owned by %d:%d after Out, want 0:0", p, uid, gid)
		}
		if mode&(unix.S_ISUID|unix.S_ISGID) != 0 || mode&0o777 != 0o755 {
			t.Errorf("%s has mode %o after Out: a set-id bit was handed to host root (or the permissions changed)", p, mode&0o7777)
		}
	}
}

// TestShiftOwnerAllKeepsSetID: the image's own setuid binaries (su,
// passwd) keep their bits in its id-shifted copy.
func TestShiftOwnerAllKeepsSetID(t *testing.T) {
	testenv.RequireRoot(t)
	root := t.TempDir()
	r := testRange()
	f := filepath.Join(root, "su")
	os.WriteFile(f, []byte("x"), 0o755)
	os.Chmod(f, 0o755|os.ModeSetuid)
	if err := (ShiftOwner{Range: r}).All(context.Background(), root); err != nil {
		t.Fatal(err)
	}
	uid, _, mode := ownerAndMode(t, f)
	if uid != r.HostUID || mode&0o7777 != 0o4755 {
		t.Fatalf("image file after All: uid %d mode %o, want %d and 4755", uid, mode&0o7777, r.HostUID)
	}
}

// TestShiftOwnerAllHonoursCancel: the image copy stops between files when
// its caller gives up.
func TestShiftOwnerAllHonoursCancel(t *testing.T) {
	testenv.RequireRoot(t)
	root := t.TempDir()
	for i := range 50 {
		os.WriteFile(filepath.Join(root, fmt.Sprint(i)), nil, 0o644)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := (ShiftOwner{Range: testRange()}).All(ctx, root)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("All on a cancelled context: %v, want context.Canceled", err)
	}
	if uid, _, _ := ownerAndMode(t, filepath.Join(root, "49")); uid != 0 {
		t.Fatalf("the walk went on after the cancel: a file is owned by %d", uid)
	}
}

// TestShiftOwnerDeepTree: a tree deeper than PATH_MAX (a step can make
// one in milliseconds) is shifted to the bottom.
func TestShiftOwnerDeepTree(t *testing.T) {
	testenv.RequireRoot(t)
	root := t.TempDir()
	r := testRange()
	name := strings.Repeat("d", 250)
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		unix.Mkdirat(fd, name, 0o755)
		next, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		fd = next
	}
	leaf, err := unix.Openat(fd, "leaf", unix.O_CREAT|unix.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	unix.Fchown(leaf, int(r.HostUID+7), int(r.HostGID+7))
	unix.Close(leaf)
	defer unix.Close(fd)
	if err := (ShiftOwner{Owner: FileOwner{1000, 1000}, Range: r}).Out(root); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(fd, "leaf", &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 1000 || st.Gid != 1000 {
		t.Fatalf("a file 5 KB of path deep is owned by %d:%d after Out, want 1000:1000", st.Uid, st.Gid)
	}
}

// TestShiftOwnerOutNeverFollowsSwappedDir attacks the walk as a step
// process that outlived the step would: it keeps swapping a directory of
// the tree for a symlink to a host directory whose file is owned by an id
// of the range. A walk by path descends through the link and gives the
// host file to the owner; the walk by descriptor never leaves the tree.
func TestShiftOwnerOutNeverFollowsSwappedDir(t *testing.T) {
	testenv.RequireRoot(t)
	root, host := t.TempDir(), t.TempDir()
	r := testRange()
	target := filepath.Join(host, "victim")
	os.WriteFile(target, nil, 0o644)
	os.Lchown(target, int(r.HostUID+9), int(r.HostGID+9))
	sub, real := filepath.Join(root, "sub"), filepath.Join(root, "sub.real")
	os.Mkdir(sub, 0o755)
	for i := range 20 {
		os.WriteFile(filepath.Join(sub, fmt.Sprint(i)), nil, 0o644)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			os.Rename(sub, real)
			os.Symlink(host, sub)
			os.Remove(sub)
			os.Rename(real, sub)
		}
	}()
	s := ShiftOwner{Owner: FileOwner{0, 0}, Range: r}
	deadline := time.Now().Add(3 * time.Second)
	var walks int
	for ; time.Now().Before(deadline); walks++ {
		s.Out(root) // errors are expected: the tree changes under the walk
		if uid, _, _ := ownerAndMode(t, target); uid != r.HostUID+9 {
			close(stop)
			<-done
			t.Fatalf("walk %d followed the planted symlink: the host file is now owned by %d", walks, uid)
		}
	}
	close(stop)
	<-done
	t.Logf("%d walks, the host file was never touched", walks)
}
