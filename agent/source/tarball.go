package source

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// Default limits of ExtractTarball.
const (
	DefaultMaxBytes = 512 << 20
	DefaultMaxFiles = 100_000
)

// Limits bound what ExtractTarball writes.
type Limits struct {
	// MaxBytes bounds the uncompressed size of all regular files
	// (default DefaultMaxBytes).
	MaxBytes int64
	// MaxFiles bounds the number of entries: files, directories and
	// links (default DefaultMaxFiles).
	MaxFiles int
}

// Tarball describes an extracted upload.
type Tarball struct {
	// SHA256 (hex) and Size are of the upload as received, compressed or
	// not, so that they can be compared with what the client sent.
	SHA256 string
	Size   int64
	// Files counts the entries extracted (files, directories and links).
	Files int
}

// maxTrailer bounds what is read, and thrown away, after the end of the
// tar archive: block padding and a gzip trailer, not a second payload.
const maxTrailer = 1 << 20

// ExtractTarball extracts a gzip-compressed or plain tar archive from r
// into dir (created if missing) and returns the upload's digest and size.
//
// The archive comes from a client, so it is distrusted: it is refused,
// with an error naming the entry, for absolute names, names escaping dir
// through "..", entries below an earlier symlink, symlinks that are
// absolute or point outside dir, hard links to anything but an earlier
// regular file, devices, fifos and other special files, and for exceeding
// lim. Every write goes through an os.Root opened on dir, so that even a
// check missed here cannot write outside it. Ownership, times and extended
// attributes are not restored; files become 0644 (0755 when any execute
// bit was set) and directories 0755, without setuid, setgid or sticky bits.
//
// On error dir is left partially written: the caller deletes it.
func ExtractTarball(r io.Reader, dir string, lim Limits) (Tarball, error) {
	if lim.MaxBytes <= 0 {
		lim.MaxBytes = DefaultMaxBytes
	}
	if lim.MaxFiles <= 0 {
		lim.MaxFiles = DefaultMaxFiles
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Tarball{}, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return Tarball{}, err
	}
	defer root.Close()

	up := &counter{h: sha256.New()}
	raw := bufio.NewReaderSize(io.TeeReader(r, up), 64<<10)
	var res Tarball
	magic, err := raw.Peek(6)
	if len(magic) == 0 {
		if err == io.EOF {
			return Tarball{}, errors.New("the upload is empty")
		}
		return Tarball{}, fmt.Errorf("reading the upload: %w", err)
	}
	var body io.Reader = raw
	var gz *gzip.Reader
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		gz, err = gzip.NewReader(raw)
		if err != nil {
			return Tarball{}, fmt.Errorf("the upload is not valid gzip: %w", err)
		}
		body = gz
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return Tarball{}, errors.New("the upload is zstd-compressed; send a gzip-compressed or plain tar archive")
	case bytes.HasPrefix(magic, []byte("BZh")):
		return Tarball{}, errors.New("the upload is bzip2-compressed; send a gzip-compressed or plain tar archive")
	case bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return Tarball{}, errors.New("the upload is xz-compressed; send a gzip-compressed or plain tar archive")
	case bytes.HasPrefix(magic, []byte("PK\x03\x04")):
		return Tarball{}, errors.New("the upload is a zip archive; send a gzip-compressed or plain tar archive")
	}

	x := &extractor{root: root, lim: lim, symlinks: map[string]bool{}, regular: map[string]bool{}, dirs: map[string]bool{}}
	tr := tar.NewReader(body)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if res.Files == 0 && gz == nil {
				return Tarball{}, fmt.Errorf("the upload is not a tar archive (nor gzip-compressed): %w", err)
			}
			return Tarball{}, fmt.Errorf("reading the archive after %d entries: %w", res.Files, err)
		}
		created, err := x.entry(hdr, tr)
		if err != nil {
			return Tarball{}, err
		}
		if created {
			res.Files++
		}
	}
	if gz != nil {
		// gzip verifies its checksum only at the end of the stream, and
		// the tar reader stops at the end-of-archive blocks.
		n, err := io.Copy(io.Discard, io.LimitReader(gz, maxTrailer+1))
		if err != nil {
			return Tarball{}, fmt.Errorf("the upload is not valid gzip: %w", err)
		}
		if n > maxTrailer {
			return Tarball{}, errors.New("more than 1 MiB of data follows the end of the tar archive")
		}
	}
	// Hash the whole upload, not just what the archive needed.
	n, err := io.Copy(io.Discard, io.LimitReader(raw, maxTrailer+1))
	if err != nil {
		return Tarball{}, fmt.Errorf("reading the upload: %w", err)
	}
	if n > maxTrailer {
		return Tarball{}, errors.New("more than 1 MiB of data follows the end of the archive")
	}
	res.SHA256, res.Size = hex.EncodeToString(up.h.Sum(nil)), up.n
	return res, nil
}

type counter struct {
	h hash.Hash
	n int64
}

func (c *counter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.h.Write(p)
}

type extractor struct {
	root     *os.Root
	lim      Limits
	files    int
	bytes    int64
	symlinks map[string]bool // every name that was ever a symlink
	regular  map[string]bool // regular files extracted so far (hard link targets)
	dirs     map[string]bool // directories made so far
}

// mkdirs makes dir and its parents, each 0755 whatever the umask, and
// refuses to go through anything that is not a directory.
func (x *extractor) mkdirs(dir string) error {
	if dir == "." || x.dirs[dir] {
		return nil
	}
	if err := x.mkdirs(path.Dir(dir)); err != nil {
		return err
	}
	err := x.root.Mkdir(dir, 0o755)
	switch {
	case err == nil:
		// Mkdir's mode is subject to the umask.
		if err := x.root.Chmod(dir, 0o755); err != nil {
			return err
		}
	case errors.Is(err, fs.ErrExist):
		fi, err := x.root.Lstat(dir)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			return fmt.Errorf("%q is not a directory", dir)
		}
	default:
		return err
	}
	x.dirs[dir] = true
	return nil
}

// entry extracts one header and reports whether it created anything.
func (x *extractor) entry(hdr *tar.Header, r io.Reader) (bool, error) {
	name, err := x.cleanName(hdr.Name)
	if err != nil {
		return false, err
	}
	q := fmt.Sprintf("%q", hdr.Name)
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return false, nil // pax global metadata, nothing to create
	case tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
	case tar.TypeChar, tar.TypeBlock:
		return false, fmt.Errorf("archive entry %s is a device; only files, directories and links are accepted", q)
	case tar.TypeFifo:
		return false, fmt.Errorf("archive entry %s is a fifo; only files, directories and links are accepted", q)
	default:
		return false, fmt.Errorf("archive entry %s has unsupported type %q; only files, directories and links are accepted", q, hdr.Typeflag)
	}
	if name == "." {
		if hdr.Typeflag == tar.TypeDir {
			return false, nil // "./": dir itself
		}
		return false, fmt.Errorf("archive entry %s names the top directory itself", q)
	}
	if x.files++; x.files > x.lim.MaxFiles {
		return false, fmt.Errorf("archive entry %s: more than %d entries in the archive (the limit)", q, x.lim.MaxFiles)
	}
	for p := path.Dir(name); p != "."; p = path.Dir(p) {
		if x.symlinks[p] {
			return false, fmt.Errorf("archive entry %s is below %q, which is a symlink", q, p)
		}
	}
	if err := x.mkdirs(path.Dir(name)); err != nil {
		return false, fmt.Errorf("archive entry %s: creating its directory: %w", q, err)
	}

	switch hdr.Typeflag {
	case tar.TypeDir:
		if fi, err := x.root.Lstat(name); err == nil && !fi.IsDir() {
			return false, fmt.Errorf("archive entry %s: a directory replaces an earlier non-directory entry", q)
		}
		if err := x.mkdirs(name); err != nil {
			return false, fmt.Errorf("archive entry %s: %w", q, err)
		}
		return true, nil

	case tar.TypeReg:
		if err := x.file(hdr, name, q, r); err != nil {
			return false, err
		}
		return true, nil

	case tar.TypeSymlink:
		if err := x.checkSymlink(name, hdr.Linkname); err != nil {
			return false, fmt.Errorf("archive entry %s: %w", q, err)
		}
		if err := x.replace(name, q); err != nil {
			return false, err
		}
		if err := x.root.Symlink(hdr.Linkname, name); err != nil {
			return false, fmt.Errorf("archive entry %s: %w", q, err)
		}
		x.symlinks[name] = true
		return true, nil

	default: // tar.TypeLink
		target, err := x.cleanName(hdr.Linkname)
		if err != nil || !x.regular[target] {
			return false, fmt.Errorf("archive entry %s is a hard link to %q, which is not an earlier regular file in the archive", q, hdr.Linkname)
		}
		if target == name {
			return false, fmt.Errorf("archive entry %s is a hard link to itself", q)
		}
		if err := x.replace(name, q); err != nil {
			return false, err
		}
		if err := x.root.Link(target, name); err != nil {
			return false, fmt.Errorf("archive entry %s: %w", q, err)
		}
		x.regular[name] = true
		return true, nil
	}
}

// file extracts a regular file within the archive's byte limit.
func (x *extractor) file(hdr *tar.Header, name, q string, r io.Reader) error {
	if hdr.Size < 0 {
		return fmt.Errorf("archive entry %s has a negative size", q)
	}
	if hdr.Size > x.lim.MaxBytes-x.bytes {
		return fmt.Errorf("archive entry %s: the archive holds more than %d bytes uncompressed (the limit)", q, x.lim.MaxBytes)
	}
	if err := x.replace(name, q); err != nil {
		return err
	}
	mode := os.FileMode(0o644)
	if hdr.Mode&0o111 != 0 {
		mode = 0o755
	}
	// O_EXCL: never write through whatever might sit at name.
	f, err := x.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("archive entry %s: %w", q, err)
	}
	n, err := io.Copy(f, io.LimitReader(r, hdr.Size))
	x.bytes += n
	if err == nil && n != hdr.Size {
		err = io.ErrUnexpectedEOF
	}
	if err == nil {
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("archive entry %s: %w", q, err)
	}
	x.regular[name] = true
	return nil
}

// cleanName turns an entry name into a clean relative path, refusing
// absolute names and names that climb out of the archive's top.
func (x *extractor) cleanName(raw string) (string, error) {
	q := fmt.Sprintf("%q", raw)
	switch {
	case raw == "":
		return "", errors.New("archive entry with an empty name")
	case strings.ContainsRune(raw, 0):
		return "", fmt.Errorf("archive entry %s contains a NUL byte", q)
	case strings.HasPrefix(raw, "/"):
		return "", fmt.Errorf("archive entry %s has an absolute name", q)
	}
	name := path.Clean(raw)
	if name == ".." || strings.HasPrefix(name, "../") {
		return "", fmt.Errorf("archive entry %s escapes the directory through \"..\"", q)
	}
	return name, nil
}

// checkSymlink refuses a symlink at name whose target is absolute or
// leaves the directory. The target may start with "..", but no ".." may
// follow a real component: "a/.." is only lexically the same as "." when
// "a" is not itself a symlink, and later entries may make it one. With
// that rule every target resolves inside, whatever the other symlinks
// are, because their own targets obey it too and no entry lies below a
// symlink.
func (x *extractor) checkSymlink(name, target string) error {
	switch {
	case target == "":
		return errors.New("symlink with an empty target")
	case strings.ContainsRune(target, 0):
		return errors.New("symlink target contains a NUL byte")
	case strings.HasPrefix(target, "/"):
		return fmt.Errorf("symlink to the absolute path %q; only relative targets inside the archive are accepted", target)
	}
	seenName := false
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "", ".":
		case "..":
			if seenName {
				return fmt.Errorf("symlink target %q has \"..\" after a directory name; write it without", target)
			}
		default:
			seenName = true
		}
	}
	resolved := path.Join(path.Dir(name), target)
	if resolved == ".." || strings.HasPrefix(resolved, "../") {
		return fmt.Errorf("symlink to %q points outside the directory", target)
	}
	return nil
}

// replace removes an earlier non-directory entry at name, so that a later
// entry replaces it (as tar does) instead of writing through it.
func (x *extractor) replace(name, q string) error {
	fi, err := x.root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("archive entry %s: %w", q, err)
	}
	if fi.IsDir() {
		return fmt.Errorf("archive entry %s would replace an earlier directory", q)
	}
	delete(x.regular, name)
	if err := x.root.Remove(name); err != nil {
		return fmt.Errorf("archive entry %s: %w", q, err)
	}
	return nil
}
