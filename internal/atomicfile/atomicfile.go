// Package atomicfile replaces files so that a reader sees the old content
// or the new, never a part: the bytes go to a temporary file in the same
// directory, which is synced, given its mode, and renamed over the target;
// the directory is then synced so that the rename survives a crash.
// Provenance, run outputs, the agent's tokens file, the GitLab driver's
// job state and the outputs it writes into a job's directory are all
// written this way; WriteIn does it inside an os.Root, for directories an
// untrusted build shaped (a planted symlink must not lead the write out).
package atomicfile

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
)

// Write replaces path with what write produces, with mode perm. Nothing
// is replaced if write fails.
func Write(path string, perm os.FileMode, write func(io.Writer) error) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	return WriteIn(root, base, perm, write)
}

// WriteIn is Write for name inside root: every path is resolved by root,
// which refuses to leave it.
func WriteIn(root *os.Root, name string, perm os.FileMode, write func(io.Writer) error) error {
	dir, base := filepath.Split(name)
	var r [8]byte
	rand.Read(r[:])
	tmp := filepath.Join(dir, "."+base+".tmp-"+hex.EncodeToString(r[:]))
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	defer root.Remove(tmp) // fails harmlessly once renamed
	err = f.Chmod(perm)    // not narrowed by the umask
	if err == nil {
		err = write(f)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := root.Rename(tmp, name); err != nil {
		return err
	}
	// The rename is done; syncing the directory (its durability) is best
	// effort, as a reader already sees the new content.
	if d, err := root.Open(filepath.Join(dir, ".")); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// WriteFile replaces path with data, with mode perm.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return Write(path, perm, func(w io.Writer) error {
		_, err := io.Copy(w, bytes.NewReader(data))
		return err
	})
}

// Copy replaces dst with the content of src, with mode perm.
func Copy(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return Write(dst, perm, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}
