package userns

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/cleanroom-ci/cleanroom/internal/longpath"
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
type ShiftOwner struct {
	Owner FileOwner
	Range Range
}

// In gives owner's files to container root.
func (s ShiftOwner) In(root string) error {
	return chownTree(root, func(uid, gid uint32) (uint32, uint32, bool) {
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

// Out gives every file of the range back to owner.
func (s ShiftOwner) Out(root string) error {
	in := func(id, base uint32) bool { return id >= base && id-base < s.Range.Size }
	return chownTree(root, func(uid, gid uint32) (uint32, uint32, bool) {
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
// range's n): an image's root filesystem made for the range's root.
func (s ShiftOwner) All(root string) error {
	return chownTree(root, func(uid, gid uint32) (uint32, uint32, bool) {
		if uid >= s.Range.Size || gid >= s.Range.Size {
			// Not representable in the namespace; it shows as nobody.
			return uid, gid, false
		}
		return s.Range.HostUID + uid, s.Range.HostGID + gid, true
	})
}

// chownTree walks the tree through internal/longpath: a step can make a
// tree deeper than PATH_MAX, and a walk by path would fail on it.
func chownTree(root string, fn func(uid, gid uint32) (uint32, uint32, bool)) error {
	d, err := longpath.Open(root)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("userns: %w", err)
	}
	defer d.Close()
	return d.WalkDir(func(rel string, de fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		info, err := de.Info()
		if err != nil {
			return nil
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		if nu, ng, change := fn(st.Uid, st.Gid); change {
			// Lchown: never follow a link the step planted to a host file.
			if err := d.Lchown(rel, int(nu), int(ng)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("userns: chown %s: %w", filepath.Join(root, rel), err)
			}
			// chown clears setuid and setgid; the image's own modes stay.
			if m := info.Mode(); m&fs.ModeSymlink == 0 && m&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0 {
				d.Chmod(rel, m)
			}
		}
		return nil
	})
}
