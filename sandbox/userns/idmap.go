package userns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ErrIDMapUnsupported means the filesystem (or kernel) cannot idmap the
// mount; the caller falls back to shifting ownership (ShiftOwner).
var ErrIDMapUnsupported = errors.New("userns: idmapped mounts are not supported here")

// FileOwner is the on-disk owner of a host directory that a step writes.
type FileOwner struct{ UID, GID uint32 }

// OwnerOf returns the owner of path.
func OwnerOf(path string) (FileOwner, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return FileOwner{}, fmt.Errorf("userns: %w", err)
	}
	return FileOwner{UID: st.Uid, GID: st.Gid}, nil
}

// IDMapped mounts a clone of the mount tree at src on dst (created, a
// directory or a file like src), idmapped so that files owned on disk by
// owner appear as, and are written by, container root of r. The step's
// other ids (1..Size-1) are stored as the same ids of r on disk, so that
// `chown` to a build user and `tar` keeping owners work; ShiftOwner.Out
// gives those files to owner after the step. Files of any other owner
// appear as the overflow id (nobody) and keep their owner: the step cannot
// make a file owned by a host id outside r but owner's. The mount is
// nosuid and nodev. Unmount it with Unmount.
func IDMapped(src, dst string, owner FileOwner, r Range) error {
	uids, gids := []Mapping{{owner.UID, r.HostUID, 1}}, []Mapping{{owner.GID, r.HostGID, 1}}
	inRange := func(id, base uint32) bool { return id >= base && id-base < r.Size }
	if r.Size > 1 && !inRange(owner.UID, r.HostUID) && !inRange(owner.GID, r.HostGID) {
		uids = append(uids, Mapping{r.HostUID + 1, r.HostUID + 1, r.Size - 1})
		gids = append(gids, Mapping{r.HostGID + 1, r.HostGID + 1, r.Size - 1})
	}
	h, err := spawn(uids, gids, 0)
	if err != nil {
		return err
	}
	nsf, err := os.Open(h.nsPath("user"))
	h.stop() // the open file keeps the namespace alive
	if err != nil {
		return fmt.Errorf("userns: %w", err)
	}
	defer nsf.Close()

	tree, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return fmt.Errorf("userns: clone mount of %s: %w", src, err)
	}
	defer unix.Close(tree)
	attr := &unix.MountAttr{
		Attr_set:  unix.MOUNT_ATTR_IDMAP | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV,
		Userns_fd: uint64(nsf.Fd()),
	}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, attr); err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
			return fmt.Errorf("%w (%s: %v)", ErrIDMapUnsupported, src, err)
		}
		return fmt.Errorf("userns: idmap %s: %w", src, err)
	}
	fi, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("userns: %w", err)
	}
	if fi.IsDir() {
		err = os.MkdirAll(dst, 0o700)
	} else {
		var f *os.File
		if f, err = os.OpenFile(dst, os.O_CREATE|os.O_RDONLY, 0o400); err == nil {
			f.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("userns: mount point: %w", err)
	}
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		os.Remove(dst)
		return fmt.Errorf("userns: attach idmapped mount at %s: %w", dst, err)
	}
	return nil
}

// Unmount detaches a mount made by IDMapped and removes its mount point.
func Unmount(dst string) error {
	err := unix.Unmount(dst, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("userns: unmount %s: %w", dst, err)
	}
	if err := os.Remove(dst); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("userns: remove %s: %w", dst, err)
	}
	return nil
}

// ShiftOwner is the fallback where a filesystem cannot be idmapped: before
// the step, the tree's files owned by owner are given to container root of
// r (In); after it, every file owned by an id of r goes back to owner
// (Out), so nothing is left owned by a mapped id nobody owns. It costs a
// walk of the tree each way (see docs/benchmarks.md).
//
// In and Out leave no setuid or setgid bit on what they re-own: the owner
// may be host root (a root-owned workspace or cache), and a bit the step
// set on its own file would become a setuid-root file on the host. Only
// All, the image's copy, keeps the image's own bits.
type ShiftOwner struct {
	Owner FileOwner
	Range Range
}

// In gives owner's files to container root. A walk that fails half-way
// leaves a tree Out still gives back completely.
func (s ShiftOwner) In(root string) error {
	return chownTree(context.Background(), root, false, func(uid, gid uint32) (uint32, uint32, bool) {
		nu, ng := uid, gid
		if uid == s.Owner.UID {
			nu = s.Range.HostUID
		}
		if gid == s.Owner.GID {
			ng = s.Range.HostGID
		}
		return nu, ng, nu != uid || ng != gid
	})
}

// Out gives every file of the range back to owner. It goes on past a file
// it cannot change and reports them all.
func (s ShiftOwner) Out(root string) error {
	in := func(id, base uint32) bool { return id >= base && id-base < s.Range.Size }
	return chownTree(context.Background(), root, false, func(uid, gid uint32) (uint32, uint32, bool) {
		nu, ng := uid, gid
		if in(uid, s.Range.HostUID) {
			nu = s.Owner.UID
		}
		if in(gid, s.Range.HostGID) {
			ng = s.Owner.GID
		}
		return nu, ng, nu != uid || ng != gid
	})
}

// All shifts every owner in the tree into the range (id n becomes the
// range's n): an image's root filesystem made for the range's root. Its
// setuid and setgid bits stay (su in the image stays su for the step's
// ids). It stops between files once ctx ends.
func (s ShiftOwner) All(ctx context.Context, root string) error {
	return chownTree(ctx, root, true, func(uid, gid uint32) (uint32, uint32, bool) {
		if uid >= s.Range.Size || gid >= s.Range.Size {
			// Not representable in the namespace; it shows as nobody.
			return uid, gid, false
		}
		return s.Range.HostUID + uid, s.Range.HostGID + gid, true
	})
}

// chownTree re-owns the tree at root (root included) by descriptor: each
// directory is opened with openat(O_NOFOLLOW) from its parent's
// descriptor, and each entry is stat'ed and chowned with
// AT_SYMLINK_NOFOLLOW from its directory's. No path below root is ever
// resolved, so a process still writing the tree cannot turn a directory
// into a link to a host directory and redirect a chown, and no depth (a
// tree deeper than PATH_MAX) stops the walk. A file that vanishes during
// the walk is skipped; any other failure is reported after the walk went
// on with the rest. keepSetID puts back the setuid and setgid bits that
// chown clears; without it, no re-owned entry keeps one.
func chownTree(ctx context.Context, root string, keepSetID bool, fn func(uid, gid uint32) (uint32, uint32, bool)) error {
	w := &chownWalk{ctx: ctx, root: root, keepSetID: keepSetID, fn: fn}
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case errors.Is(err, unix.ENOTDIR):
		w.entry(unix.AT_FDCWD, root, ".") // a file mount
	case err != nil:
		return fmt.Errorf("userns: open %s: %w", root, err)
	default:
		w.dir(fd, ".")
	}
	return w.err()
}

type chownWalk struct {
	ctx       context.Context
	root      string
	keepSetID bool
	fn        func(uid, gid uint32) (uint32, uint32, bool)
	errs      []error
	failed    int
}

// maxWalkErrors is how many failures a walk names; it counts the rest.
const maxWalkErrors = 8

func (w *chownWalk) fail(op, rel string, err error) {
	w.failed++
	if len(w.errs) < maxWalkErrors {
		w.errs = append(w.errs, fmt.Errorf("userns: %s %s: %w", op, filepath.Join(w.root, rel), err))
	}
}

func (w *chownWalk) err() error {
	if err := w.ctx.Err(); err != nil {
		return fmt.Errorf("userns: ownership walk of %s stopped: %w", w.root, context.Cause(w.ctx))
	}
	if w.failed > len(w.errs) {
		w.errs = append(w.errs, fmt.Errorf("userns: and %d more files of %s", w.failed-len(w.errs), w.root))
	}
	return errors.Join(w.errs...)
}

// dir re-owns the directory open as fd (rel below root), then its
// entries; it closes fd.
func (w *chownWalk) dir(fd int, rel string) {
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		w.fail("stat", rel, err)
		return
	}
	w.apply(fd, false, &st, rel)
	for {
		names, err := f.Readdirnames(1024)
		for _, name := range names {
			if w.ctx.Err() != nil {
				return
			}
			w.entry(fd, name, filepath.Join(rel, name))
		}
		if err == io.EOF || (err == nil && len(names) == 0) {
			return
		}
		if err != nil {
			w.fail("read", rel, err)
			return
		}
	}
}

// entry re-owns name in the directory dirfd, descending into a directory.
func (w *chownWalk) entry(dirfd int, name, rel string) {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if !errors.Is(err, unix.ENOENT) {
			w.fail("stat", rel, err)
		}
		return
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		// O_NOFOLLOW: if the directory was swapped for a link since the
		// stat, the open fails instead of leaving the tree.
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			if !errors.Is(err, unix.ENOENT) {
				w.fail("open", rel, err)
			}
			return
		}
		w.dir(fd, rel)
		return
	}
	if _, _, change := w.fn(st.Uid, st.Gid); !change {
		return // the common case costs one stat
	}
	// The entry is changed through a descriptor of what is there now
	// (the link itself if it is one), never through its name again.
	fd, err := unix.Openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if !errors.Is(err, unix.ENOENT) {
			w.fail("open", rel, err)
		}
		return
	}
	defer unix.Close(fd)
	if err := unix.Fstat(fd, &st); err != nil {
		w.fail("stat", rel, err)
		return
	}
	w.apply(fd, true, &st, rel)
}

// apply re-owns the file open as fd (an O_PATH descriptor if pathFD) as
// fn says, st being its stat.
func (w *chownWalk) apply(fd int, pathFD bool, st *unix.Stat_t, rel string) {
	nu, ng, change := w.fn(st.Uid, st.Gid)
	if !change {
		return
	}
	if err := unix.Fchownat(fd, "", int(nu), int(ng), unix.AT_EMPTY_PATH); err != nil {
		w.fail("chown", rel, err)
		return
	}
	setID := st.Mode & (unix.S_ISUID | unix.S_ISGID)
	if setID == 0 || st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return
	}
	// chown clears setuid and setgid on files (not on directories):
	// All puts the image's back, In and Out clear what is left.
	mode := st.Mode & 0o7777
	if !w.keepSetID {
		mode &^= unix.S_ISUID | unix.S_ISGID
	}
	var err error
	if pathFD {
		// An O_PATH descriptor cannot fchmod; its /proc link is the
		// very inode, whatever its name points to by now.
		err = unix.Chmod(fmt.Sprintf("/proc/self/fd/%d", fd), mode)
	} else {
		err = unix.Fchmod(fd, mode)
	}
	if err != nil {
		w.fail("chmod", rel, err)
	}
}
