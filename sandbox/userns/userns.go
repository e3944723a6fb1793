// Package userns gives build steps user namespaces of their own: ranges of
// host uids and gids that cleanroom owns (an /etc/subuid-style allocation),
// user namespaces created and pinned before a container joins them, and
// idmapped bind mounts that let a step's root write a host directory as the
// directory's owner.
//
// Container root in such a namespace is an unprivileged host uid: a
// container escape or a kernel bug reached through the step's capabilities
// gives that uid, not host root, and every capability the step holds is
// over its own namespaces only.
package userns

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Allocation: cleanroom owns Slots ranges of SlotSize ids each, starting at
// DefaultBase, unless /etc/subuid and /etc/subgid have a "cleanroom" entry,
// which then wins (same format as for any user: "cleanroom:BASE:COUNT").
// The default sits far above the ranges useradd hands out (from 100000
// upwards, 65536 each), so it does not collide with rootless users.
const (
	DefaultBase  = 1_000_000_000
	SlotSize     = 65536
	DefaultSlots = 1024
	// Owner is the name looked up in /etc/subuid and /etc/subgid.
	Owner = "cleanroom"
)

// Range is a contiguous block of host ids that container ids 0..Size-1 map
// to: container root is host HostUID.
type Range struct {
	HostUID uint32
	HostGID uint32
	Size    uint32
}

// String is "uid:gid+size", for logs and provenance.
func (r Range) String() string { return fmt.Sprintf("%d:%d+%d", r.HostUID, r.HostGID, r.Size) }

// Pool is the set of ranges cleanroom may hand out.
type Pool struct {
	UIDBase, GIDBase uint32
	Slots            int
}

// LoadPool reads the "cleanroom" entries of /etc/subuid and /etc/subgid
// (root is the directory holding them, "/etc" normally), falling back to
// the documented default. It refuses a default range that overlaps another
// owner's entry: two owners of one host uid would undo the isolation.
func LoadPool(root string) (Pool, error) {
	uid, err := readSubID(filepath.Join(root, "subuid"))
	if err != nil {
		return Pool{}, err
	}
	gid, err := readSubID(filepath.Join(root, "subgid"))
	if err != nil {
		return Pool{}, err
	}
	p := Pool{UIDBase: DefaultBase, GIDBase: DefaultBase, Slots: DefaultSlots}
	if e, ok := uid.own(); ok {
		p.UIDBase, p.Slots = e.base, int(e.count/SlotSize)
	} else if o := uid.overlap(DefaultBase, DefaultSlots*SlotSize); o != "" {
		return Pool{}, fmt.Errorf("userns: the default id range %d+%d overlaps %s's entry in %s/subuid; add a %q entry", DefaultBase, DefaultSlots*SlotSize, o, root, Owner)
	}
	if e, ok := gid.own(); ok {
		p.GIDBase = e.base
		if n := int(e.count / SlotSize); n < p.Slots {
			p.Slots = n
		}
	} else if o := gid.overlap(DefaultBase, DefaultSlots*SlotSize); o != "" {
		return Pool{}, fmt.Errorf("userns: the default id range %d+%d overlaps %s's entry in %s/subgid; add a %q entry", DefaultBase, DefaultSlots*SlotSize, o, root, Owner)
	}
	if p.Slots < 1 {
		return Pool{}, fmt.Errorf("userns: the %q entries of %s/subuid and subgid hold fewer than %d ids", Owner, root, SlotSize)
	}
	return p, nil
}

type subEntry struct {
	name        string
	base, count uint32
}

type subIDs []subEntry

func (s subIDs) own() (subEntry, bool) {
	for _, e := range s {
		if e.name == Owner {
			return e, true
		}
	}
	return subEntry{}, false
}

func (s subIDs) overlap(base, count uint64) string {
	for _, e := range s {
		if uint64(e.base) < base+count && base < uint64(e.base)+uint64(e.count) {
			return e.name
		}
	}
	return ""
}

func readSubID(path string) (subIDs, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("userns: %w", err)
	}
	defer f.Close()
	var out subIDs
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		parts := strings.Split(line, ":")
		if len(parts) != 3 {
			return nil, fmt.Errorf("userns: %s:%d: want NAME:BASE:COUNT", path, n)
		}
		base, err1 := strconv.ParseUint(parts[1], 10, 32)
		count, err2 := strconv.ParseUint(parts[2], 10, 32)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("userns: %s:%d: BASE and COUNT must be numbers", path, n)
		}
		out = append(out, subEntry{name: parts[0], base: uint32(base), count: uint32(count)})
	}
	return out, sc.Err()
}

// Slot is a range held by this process until Release. Holding is an
// exclusive flock on a file named after the slot: the kernel drops it when
// the process dies, so a crashed run never keeps a range.
type Slot struct {
	Range Range
	Index int
	file  *os.File
}

// Acquire takes the lowest free slot of the pool, locked in lockDir. The
// lock directory is host-wide (ranges are host-wide): two runners with
// different state directories must not share a range at the same time.
// The lowest free slot is reused run after run, so the ownership-shifted
// copy of an image made for it (cached per range) stays warm.
func (p Pool) Acquire(lockDir string) (*Slot, error) {
	if err := os.MkdirAll(lockDir, 0o700); err != nil {
		return nil, fmt.Errorf("userns: %w", err)
	}
	for i := 0; i < p.Slots; i++ {
		f, err := os.OpenFile(filepath.Join(lockDir, fmt.Sprintf("slot-%d.lock", i)), os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return nil, fmt.Errorf("userns: %w", err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				continue
			}
			return nil, fmt.Errorf("userns: lock slot %d: %w", i, err)
		}
		off := uint32(i) * SlotSize
		return &Slot{Index: i, file: f, Range: Range{HostUID: p.UIDBase + off, HostGID: p.GIDBase + off, Size: SlotSize}}, nil
	}
	return nil, fmt.Errorf("userns: all %d id ranges are in use", p.Slots)
}

// Release frees the slot. It is idempotent.
func (s *Slot) Release() error {
	if s == nil || s.file == nil {
		return nil
	}
	err := s.file.Close() // closing drops the flock
	s.file = nil
	return err
}

// Mapping is one id mapping: container (or, for an idmapped mount, on-disk)
// ids Inner..Inner+Size-1 are host ids Host..Host+Size-1.
type Mapping struct{ Inner, Host, Size uint32 }

// holderEnv makes a re-executed copy of the running binary wait on stdin
// instead of running its main: it is the process whose namespaces are
// pinned (see holder).
const holderEnv = "_CLEANROOM_USERNS_HOLDER"

func init() {
	if os.Getenv(holderEnv) == "1" {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
}

// holder is a child process in a new user namespace (and, with flags, a
// network namespace that namespace owns). A multi-threaded Go process
// cannot unshare a user namespace itself, so a child is cloned into it;
// once its namespaces are pinned or opened it is killed.
type holder struct{ cmd *exec.Cmd }

func spawn(uids, gids []Mapping, flags uintptr) (*holder, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("userns: %w", err)
	}
	cmd := exec.Command(self)
	cmd.Path = "/proc/self/exe" // the very binary running, even if replaced on disk
	cmd.Env = []string{holderEnv + "=1"}
	cmd.Dir = "/"
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	_ = stdin // closed by Wait; the child waits on it until killed
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWUSER | flags,
		// runc sets the step's supplementary groups: setgroups must stay
		// allowed in the namespace it joins.
		GidMappingsEnableSetgroups: true,
		Pdeathsig:                  syscall.SIGKILL,
	}
	for _, m := range uids {
		cmd.SysProcAttr.UidMappings = append(cmd.SysProcAttr.UidMappings, syscall.SysProcIDMap{ContainerID: int(m.Inner), HostID: int(m.Host), Size: int(m.Size)})
	}
	for _, m := range gids {
		cmd.SysProcAttr.GidMappings = append(cmd.SysProcAttr.GidMappings, syscall.SysProcIDMap{ContainerID: int(m.Inner), HostID: int(m.Host), Size: int(m.Size)})
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("userns: start namespace holder: %w", err)
	}
	return &holder{cmd: cmd}, nil
}

func (h *holder) nsPath(kind string) string {
	return fmt.Sprintf("/proc/%d/ns/%s", h.cmd.Process.Pid, kind)
}

func (h *holder) stop() {
	h.cmd.Process.Kill()
	h.cmd.Wait()
}

// Pinned is a user namespace (and optionally a network namespace it owns)
// kept alive by bind mounts of their nsfs files, so that a container can
// join them by path.
type Pinned struct {
	UserPath string
	NetPath  string // "" unless made WithNet
}

// Pin creates a user namespace mapping container ids 0..Size-1 to r, with a
// network namespace it owns when withNet, and pins them at dir/name.user
// and dir/name (dir must be a shared mount point, see sandbox/netns). A
// network namespace owned by a user namespace other than the host's gets no
// host uevents and only its own sysctls.
func Pin(dir, name string, r Range, withNet bool) (p *Pinned, err error) {
	var flags uintptr
	if withNet {
		flags = syscall.CLONE_NEWNET
	}
	h, err := spawn([]Mapping{{0, r.HostUID, r.Size}}, []Mapping{{0, r.HostGID, r.Size}}, flags)
	if err != nil {
		return nil, err
	}
	defer h.stop()
	p = &Pinned{}
	defer func() {
		if err != nil {
			p.Remove()
		}
	}()
	if p.UserPath, err = pin(h.nsPath("user"), filepath.Join(dir, name+".user")); err != nil {
		return p, err
	}
	if withNet {
		if p.NetPath, err = pin(h.nsPath("net"), filepath.Join(dir, name)); err != nil {
			return p, err
		}
	}
	return p, nil
}

func pin(src, dst string) (string, error) {
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return "", fmt.Errorf("userns: create mount point: %w", err)
	}
	f.Close()
	if err := unix.Mount(src, dst, "none", unix.MS_BIND, ""); err != nil {
		os.Remove(dst)
		return "", fmt.Errorf("userns: pin %s at %s: %w", src, dst, err)
	}
	return dst, nil
}

// Remove unpins the namespaces and removes their files; idempotent.
func (p *Pinned) Remove() error {
	var errs []error
	for _, path := range []string{p.NetPath, p.UserPath} {
		if path != "" {
			errs = append(errs, Unpin(path))
		}
	}
	return errors.Join(errs...)
}

// Unpin removes one pinned namespace file (also used to reap what a
// crashed run left).
func Unpin(path string) error {
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("userns: unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("userns: remove %s: %w", path, err)
	}
	return nil
}
