// Package longpath opens files below a directory by path while the path is
// short, and through an os.Root (one openat per component) when it is not.
// A build step can make a tree deeper than PATH_MAX in milliseconds; a
// runner that walks it by path fails with ENAMETOOLONG, which turns the
// step's tree into the runner's failure. The short-path case stays one
// syscall per operation.
package longpath

import (
	"io/fs"
	"os"
	"path/filepath"
)

// shortPath is comfortably below PATH_MAX (4096 on Linux, including the NUL).
const shortPath = 3072

// Dir is a directory whose descendants are opened by relative path.
type Dir struct {
	path string
	root *os.Root
	// rootOnly sends every operation through root, whatever the length.
	rootOnly bool
}

// Open opens dir.
func Open(dir string) (*Dir, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	return &Dir{path: dir, root: r}, nil
}

// OpenRooted opens dir for callers that must never leave it: every
// operation goes through the os.Root, so a symlink in a parent component
// cannot lead outside dir, and ".." cannot climb out of it (os.Root
// refuses both), however short the path. A path by name would follow a
// planted parent symlink anywhere on the host.
func OpenRooted(dir string) (*Dir, error) {
	d, err := Open(dir)
	if err != nil {
		return nil, err
	}
	d.rootOnly = true
	return d, nil
}

// Close releases the directory.
func (d *Dir) Close() error { return d.root.Close() }

// Path is the directory's path.
func (d *Dir) Path() string { return d.path }

func (d *Dir) short(rel string) (string, bool) {
	if d.rootOnly {
		return "", false
	}
	if len(d.path)+1+len(rel) < shortPath {
		return filepath.Join(d.path, rel), true
	}
	return "", false
}

// OpenFile is os.OpenFile of rel.
func (d *Dir) OpenFile(rel string, flag int, perm fs.FileMode) (*os.File, error) {
	if p, ok := d.short(rel); ok {
		return os.OpenFile(p, flag, perm)
	}
	return d.root.OpenFile(rel, flag, perm)
}

// Lstat is os.Lstat of rel.
func (d *Dir) Lstat(rel string) (fs.FileInfo, error) {
	if p, ok := d.short(rel); ok {
		return os.Lstat(p)
	}
	return d.root.Lstat(rel)
}

// Readlink is os.Readlink of rel.
func (d *Dir) Readlink(rel string) (string, error) {
	if p, ok := d.short(rel); ok {
		return os.Readlink(p)
	}
	return d.root.Readlink(rel)
}

// ReadDir lists rel ("." for the directory itself).
func (d *Dir) ReadDir(rel string) ([]fs.DirEntry, error) {
	f, err := d.OpenFile(rel, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.ReadDir(-1)
}

// Mkdir is os.Mkdir of rel.
func (d *Dir) Mkdir(rel string, perm fs.FileMode) error {
	if p, ok := d.short(rel); ok {
		return os.Mkdir(p, perm)
	}
	return d.root.Mkdir(rel, perm)
}

// Symlink makes rel a symlink to target.
func (d *Dir) Symlink(target, rel string) error {
	if p, ok := d.short(rel); ok {
		return os.Symlink(target, p)
	}
	return d.root.Symlink(target, rel)
}

// Lchown is os.Lchown of rel.
func (d *Dir) Lchown(rel string, uid, gid int) error {
	if p, ok := d.short(rel); ok {
		return os.Lchown(p, uid, gid)
	}
	return d.root.Lchown(rel, uid, gid)
}

// Chmod is os.Chmod of rel.
func (d *Dir) Chmod(rel string, mode fs.FileMode) error {
	if p, ok := d.short(rel); ok {
		return os.Chmod(p, mode)
	}
	return d.root.Chmod(rel, mode)
}

// WalkDir walks the tree lexically (symlinks are not followed), like
// filepath.WalkDir, with paths relative to the directory ("." first).
func (d *Dir) WalkDir(fn fs.WalkDirFunc) error {
	return fs.WalkDir(dirFS{d}, ".", fn)
}

type dirFS struct{ d *Dir }

func (f dirFS) Open(name string) (fs.File, error) { return f.d.OpenFile(name, os.O_RDONLY, 0) }
func (f dirFS) ReadDir(name string) ([]fs.DirEntry, error) {
	return f.d.ReadDir(name)
}
