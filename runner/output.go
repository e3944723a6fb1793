package runner

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/cleanroom-ci/cleanroom/internal/atomicfile"
)

// prefixWriter writes whole lines, each prefixed, so the output of
// concurrent streams and steps stays readable. A partial last line is
// flushed by Flush.
type prefixWriter struct {
	w      io.Writer
	prefix []byte
	buf    []byte
}

// maxLine bounds how much of a line without newline is held back.
const maxLine = 64 << 10

func newPrefixWriter(w io.Writer, prefix string) *prefixWriter {
	return &prefixWriter{w: w, prefix: []byte(prefix)}
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	n := len(b)
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			if len(p.buf) > maxLine {
				p.emit(append(p.buf, '\n'))
				p.buf = p.buf[:0]
			}
			return n, nil
		}
		p.emit(p.buf[:i+1])
		p.buf = p.buf[i+1:]
	}
}

func (p *prefixWriter) emit(line []byte) {
	out := make([]byte, 0, len(p.prefix)+len(line))
	out = append(out, p.prefix...)
	out = append(out, line...)
	p.w.Write(out)
}

// Flush writes a pending partial line.
func (p *prefixWriter) Flush() {
	if len(p.buf) > 0 {
		p.emit(append(p.buf, '\n'))
		p.buf = nil
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func writeSummary(stage string, res *Result) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(stage, "summary.json"), append(b, '\n'), 0o644)
}

// outputNames are the files and directories a run writes at the top of its
// output directory (bundles of artifacts also go below their artifact's
// directory: see clearOutputs).
var outputNames = []string{"logs", "egress.jsonl", "summary.json", ProvenanceFile, "provenance" + BundleSuffix}

// openOutDir opens the output directory as an os.Root, creating it. When
// it lies inside the source workspace (the default <workspace>/.cleanroom),
// every component below the workspace is checked not to be a symlink and
// opened from the workspace's own root: a `.cleanroom` symlink committed to
// a repository, or left by a step of a reused workspace, must not turn the
// runner's writes into writes elsewhere on the host.
func openOutDir(cfg Config) (*os.Root, error) {
	rel, err := filepath.Rel(cfg.Workspace, cfg.OutDir)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) || filepath.IsAbs(rel) {
		if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
			return nil, err
		}
		return os.OpenRoot(cfg.OutDir)
	}
	root, err := os.OpenRoot(cfg.Workspace)
	if err != nil {
		return nil, err
	}
	for _, name := range strings.Split(filepath.ToSlash(rel), "/") {
		next, err := openDirNoSymlink(root, name)
		root.Close()
		if err != nil {
			return nil, err
		}
		root = next
	}
	return root, nil
}

// openDirNoSymlink opens (creating) the directory name of root, refusing a
// symlink or anything that is not a directory.
func openDirNoSymlink(root *os.Root, name string) (*os.Root, error) {
	fi, err := root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		if err := root.Mkdir(name, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, err
		}
		fi, err = root.Lstat(name)
	}
	if err != nil {
		return nil, err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return nil, fmt.Errorf("%s is a symlink: refusing to write through it", name)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", name)
	}
	return root.OpenRoot(name)
}

// clearOutputs removes what an earlier run wrote to the output directory
// (logs, egress log, summary, provenance, bundles), so that whatever this
// run ends with (success, a failure, a cancellation) the directory never
// shows another run's files beside this one's. Symlinks are removed as
// links, never followed.
// ClearOutputs removes what an earlier run wrote to outDir (as a run does
// before its first step), for a front end that refuses a run before it
// starts: the output directory then describes no run rather than an
// earlier one as if it were this one.
func ClearOutputs(workspace, outDir string) error {
	return clearOutputs(Config{Workspace: workspace, OutDir: outDir})
}

func clearOutputs(cfg Config) error {
	root, err := openOutDir(cfg)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, n := range outputNames {
		if err := root.RemoveAll(n); err != nil {
			return err
		}
	}
	var bundles []string
	fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, BundleSuffix) {
			bundles = append(bundles, p)
		}
		return nil
	})
	for _, b := range bundles {
		if err := root.Remove(b); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// publish moves the run's outputs from the staging directory into the
// output directory, through an os.Root that no symlink leads out of and
// refusing a symlink wherever a directory is expected. Each file is written
// to a temporary name and renamed over its final name (a rename replaces a
// link, it does not follow it), so a reader (or a full disk) never sees a
// partial file presented as complete.
func publish(cfg Config, stage string) error {
	if err := clearOutputs(cfg); err != nil {
		return err
	}
	root, err := openOutDir(cfg)
	if err != nil {
		return err
	}
	defer root.Close()
	return filepath.WalkDir(stage, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(stage, p)
		if rel == "." {
			return nil
		}
		if d.IsDir() {
			if rel == "empty" || rel == privateDir {
				return filepath.SkipDir
			}
			return mkdirNoSymlink(root, rel)
		}
		return copyInto(root, p, rel, 0o644)
	})
}

// owner is who files the runner writes into a user's directory belong to;
// nil leaves them to the runner (root).
type owner struct{ uid, gid int }

// ownerOf is the owner of dir (nil when it cannot be read).
func ownerOf(dir string) *owner {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	return &owner{int(st.Uid), int(st.Gid)}
}

// mkdirNoSymlink creates every directory of rel in root, refusing symlinks.
func mkdirNoSymlink(root *os.Root, rel string) error {
	return mkdirNoSymlinkAs(root, rel, nil)
}

// mkdirNoSymlinkAs is mkdirNoSymlink giving the directories it creates to
// own (when not nil).
func mkdirNoSymlinkAs(root *os.Root, rel string, own *owner) error {
	dir := ""
	for _, name := range strings.Split(filepath.ToSlash(rel), "/") {
		dir = path.Join(dir, name)
		fi, err := root.Lstat(dir)
		if errors.Is(err, fs.ErrNotExist) {
			if err := root.Mkdir(dir, 0o755); err != nil {
				return err
			}
			if own != nil {
				if err := root.Lchown(dir, own.uid, own.gid); err != nil {
					return err
				}
			}
			continue
		}
		if err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSymlink != 0 || !fi.IsDir() {
			return fmt.Errorf("%s is a symlink or not a directory: refusing to write through it", dir)
		}
	}
	return nil
}

// copyInto copies the file src to rel in root (internal/atomicfile: a
// temporary file created exclusively, so O_EXCL does not follow a planted
// link, synced, then renamed).
func copyInto(root *os.Root, src, rel string, perm fs.FileMode) error {
	return copyIntoAs(root, src, rel, perm, nil)
}

// copyIntoAs is copyInto giving the file, and the directories created for
// it, to own (when not nil): an artifact published into a user's checkout
// is the user's, not root's.
func copyIntoAs(root *os.Root, src, rel string, perm fs.FileMode, own *owner) error {
	if dir := filepath.Dir(rel); dir != "." {
		if err := mkdirNoSymlinkAs(root, dir, own); err != nil {
			return err
		}
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return atomicfile.WriteIn(root, rel, perm, func(w io.Writer) error {
		if f, ok := w.(*os.File); ok && own != nil {
			// Before the rename: the file never appears as root's. A
			// chown clears setuid/setgid, which perm never carries.
			if err := f.Chown(own.uid, own.gid); err != nil {
				return err
			}
		}
		_, err := io.Copy(w, in)
		return err
	})
}
