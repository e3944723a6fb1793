package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/cleanroom-ci/cleanroom/internal/longpath"
	"github.com/cleanroom-ci/cleanroom/runner/manifest"
	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
)

// DefaultWorkspaceSize is the size of the filesystem a fresh workspace
// lives on. It bounds what the steps of a run can write to the workspace:
// beyond it a write fails with ENOSPC inside the step, and the host's disk
// is untouched. The file behind it is sparse: only what is written uses disk.
const DefaultWorkspaceSize = 8 << 30

// Workspace modes recorded in the provenance (internalParameters.workspace).
const (
	// WorkspaceFresh: the steps ran in a copy of the source made for this
	// run, so nothing an earlier run left there can be attested.
	WorkspaceFresh = "fresh"
	// WorkspaceReused: the steps ran in the live directory (--reuse-workspace);
	// files left by earlier runs or local builds were visible to them.
	WorkspaceReused = "reused"
)

// runWorkspace is the directory the steps of one run see at /workspace.
type runWorkspace struct {
	// Dir is what is mounted into the sandboxes.
	Dir string
	// Source is the user's directory (cfg.Workspace).
	Source string
	// Mode is WorkspaceFresh or WorkspaceReused.
	Mode string
	// Files is how many entries were copied, Bytes their size.
	Files int
	Bytes int64
	// Took is how long making the workspace took.
	Took time.Duration
	// mnt is the mount point of the size-limited filesystem ("" if none),
	// img its backing file.
	mnt, img string
}

// WorkspacesDir is where the fresh workspaces of runs live.
func WorkspacesDir(stateDir string) string { return filepath.Join(stateDir, "workspaces") }

// freshWorkspace makes the per-run workspace: a size-limited ext4 filesystem
// on a sparse file under the state directory (loop-mounted nosuid,nodev), and
// in it, at /workspace, a copy of the source. The bind mount the step gets is
// of that directory, so /proc/self/mountinfo in the step shows
// "/workspace" on a loop device, not a host path.
//
// What is copied is what a user would call the source: in a git work tree,
// the tracked files and the untracked files git does not ignore (a local
// build's new files are part of it); elsewhere, everything. Never copied: .git
// (the commit is recorded from the live tree), the output directory, and any
// untracked file an artifact glob matches (an artifact is an output of this
// run, never an input).
func freshWorkspace(ctx context.Context, cfg Config) (ws *runWorkspace, err error) {
	start := time.Now()
	ws = &runWorkspace{Source: cfg.Workspace, Mode: WorkspaceFresh}
	size := cfg.WorkspaceSize
	if size == 0 {
		size = DefaultWorkspaceSize
	}
	base := WorkspacesDir(cfg.StateDir)
	if err := os.MkdirAll(base, 0o700); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			ws.remove()
		}
	}()
	if size > 0 {
		ws.img = filepath.Join(base, cfg.RunID+".img")
		ws.mnt = filepath.Join(base, cfg.RunID)
		if err := mountSizeLimited(ctx, ws.img, ws.mnt, size, cfg.Vary.HashSeed(cfg.VaryBuild)); err != nil {
			return ws, fmt.Errorf("fresh workspace: %w (--workspace-size -1 runs without a size limit)", err)
		}
	} else {
		ws.mnt = filepath.Join(base, cfg.RunID)
		if err := os.MkdirAll(ws.mnt, 0o700); err != nil {
			return ws, err
		}
	}
	ws.Dir = filepath.Join(ws.mnt, "workspace")
	src, err := os.Stat(cfg.Workspace)
	if err != nil {
		return ws, err
	}
	if err := os.Mkdir(ws.Dir, src.Mode().Perm()); err != nil {
		return ws, err
	}
	// The copy keeps every file's owner, so the top directory takes the
	// source's too: the step's view of ownership (an idmapped mount maps
	// the owner of its root) then covers the user's files, instead of
	// leaving a user's checkout unmapped and read-only under a root-owned
	// top directory.
	if st, ok := src.Sys().(*syscall.Stat_t); ok {
		if err := os.Lchown(ws.Dir, int(st.Uid), int(st.Gid)); err != nil {
			return ws, err
		}
	}
	// Both sides only through an os.Root: the entries come from a git
	// index a step of a reused workspace could have written, so no parent
	// symlink may lead the copy outside either tree.
	srcDir, err := longpath.OpenRooted(cfg.Workspace)
	if err != nil {
		return ws, err
	}
	defer srcDir.Close()
	dstDir, err := longpath.OpenRooted(ws.Dir)
	if err != nil {
		return ws, err
	}
	defer dstDir.Close()
	files, err := sourceFiles(ctx, cfg, srcDir)
	if err != nil {
		return ws, fmt.Errorf("list the source: %w", err)
	}
	if cfg.Vary != nil && cfg.Vary.FileOrder {
		// Where the filesystem keeps creation order (no size limit: a
		// plain directory), the reverse order varies it too.
		slices.Reverse(files)
	}
	c := &copier{src: srcDir, dst: dstDir, dirs: map[string]bool{}}
	for _, f := range files {
		n, err := c.copyEntry(f)
		if err != nil {
			return ws, fmt.Errorf("copy %q into the fresh workspace: %w", f.rel, err)
		}
		ws.Files++
		ws.Bytes += n
	}
	ws.Took = time.Since(start)
	return ws, nil
}

// reusedWorkspace is --reuse-workspace: the live directory itself.
func reusedWorkspace(cfg Config) *runWorkspace {
	return &runWorkspace{Dir: cfg.Workspace, Source: cfg.Workspace, Mode: WorkspaceReused}
}

// remove unmounts and deletes a fresh workspace; a reused one is left alone.
func (ws *runWorkspace) remove() error {
	if ws == nil || ws.Mode != WorkspaceFresh || ws.mnt == "" {
		return nil
	}
	var errs []error
	if ws.img != "" {
		if err := unix.Unmount(ws.mnt, 0); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			// A process still holding a file (it should not: every sandbox
			// is gone) must not keep the filesystem: detach it.
			if err := unix.Unmount(ws.mnt, unix.MNT_DETACH); err != nil {
				errs = append(errs, fmt.Errorf("unmount %s: %w", ws.mnt, err))
			}
		}
		if err := os.Remove(ws.img); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(ws.mnt); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// mountSizeLimited makes a sparse file of size bytes, an ext4 filesystem on
// it and mounts it at mnt. mount(8) attaches the loop device with autoclear,
// so unmounting frees it. Measured: about 0.25 s to make and mount, 0.1 s to
// remove (docs/benchmarks.md).
//
// hashSeed fixes the directory hash seed: ext4 lists every directory in the
// order of its names' hashes, so a fixed seed gives every run the same
// directory order (a random one, mkfs's default, would change it from run
// to run), and a rebuild's file-order variation gives another.
func mountSizeLimited(ctx context.Context, img, mnt string, size int64, hashSeed string) error {
	f, err := os.OpenFile(img, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	f.Close()
	if err != nil {
		return err
	}
	// No journal (the filesystem lives for one run and is thrown away after
	// a crash), no reserved blocks, lazy inode tables: mkfs writes almost
	// nothing.
	if err := runTool(ctx, "mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal",
		"-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard,hash_seed="+hashSeed, "-L", "workspace", img); err != nil {
		return err
	}
	if err := os.MkdirAll(mnt, 0o700); err != nil {
		return err
	}
	return runTool(ctx, "mount", "-t", "ext4", "-o", "loop,nosuid,nodev,noatime", img, mnt)
}

func runTool(ctx context.Context, name string, args ...string) error {
	bin, err := exec.LookPath(name)
	if err != nil {
		return fmt.Errorf("%s not found (install e2fsprogs and util-linux)", name)
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// sourceEntry is a workspace-relative slash path to copy; a directory is
// copied whole (a git submodule) or only created (walk bare).
type sourceEntry struct {
	rel      string
	dirAlone bool
}

// sourceFiles lists what to copy.
func sourceFiles(ctx context.Context, cfg Config, src *longpath.Dir) ([]sourceEntry, error) {
	skip := func(rel string) bool {
		return rel == ".git" || strings.HasPrefix(rel, ".git/") || underOut(cfg, cfg.OutDir, rel) || underExcluded(cfg, rel)
	}
	isArtifact := manifest.NewGlobSet(cfg.Pipeline.Artifacts).Match // compiled once, matched per file
	tracked, untracked, ok := gitFiles(ctx, cfg.Workspace)
	var out []sourceEntry
	if ok {
		for _, rel := range tracked {
			if rel, ok := localEntry(rel); ok && !skip(rel) {
				out = append(out, sourceEntry{rel: rel})
			}
		}
		for _, rel := range untracked {
			if rel, ok := localEntry(rel); ok && !skip(rel) && !isArtifact(rel) {
				out = append(out, sourceEntry{rel: rel})
			}
		}
		return out, nil
	}
	err := src.WalkDir(func(rel string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		if skip(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			// A directory is made as the parent of what it holds; only
			// an empty one is listed (one holding only excluded outputs
			// is not source).
			if ents, err := src.ReadDir(rel); err == nil && len(ents) == 0 {
				out = append(out, sourceEntry{rel: rel, dirAlone: true})
			}
			return nil
		}
		if !isArtifact(rel) {
			out = append(out, sourceEntry{rel: rel})
		}
		return nil
	})
	return out, err
}

// localEntry cleans a path git listed and keeps it only if it names
// something below the workspace. git prints an index entry as written, and
// the index is the step's to write in a reused workspace (or ships in an
// agent's tarball): "../../pw" or "x/../.git/config" must be neither read
// nor written.
func localEntry(rel string) (string, bool) {
	rel = path.Clean(rel)
	return rel, filepath.IsLocal(filepath.FromSlash(rel))
}

// underOut reports whether rel (workspace-relative) is the output directory
// or inside it.
func underOut(cfg Config, out, rel string) bool {
	outRel, err := filepath.Rel(cfg.Workspace, out)
	if err != nil || strings.HasPrefix(outRel, "..") {
		return false
	}
	outRel = filepath.ToSlash(outRel)
	return rel == outRel || strings.HasPrefix(rel, outRel+"/")
}

// underExcluded reports whether rel is one of cfg.ExcludeDirs or inside one.
func underExcluded(cfg Config, rel string) bool {
	for _, d := range cfg.ExcludeDirs {
		if underOut(cfg, d, rel) {
			return true
		}
	}
	return false
}

// gitFiles lists the tracked and the untracked-but-not-ignored files under
// dir, relative to it; ok is false when dir is not in a git work tree.
// Submodules are listed as their directory (copied whole).
func gitFiles(ctx context.Context, dir string) (tracked, untracked []string, ok bool) {
	git := func(args ...string) ([]string, error) {
		// git runs as root on a tree a step of a reused workspace could
		// have written (.git/config): no fsmonitor hook (a command git
		// would run), and the repository is trusted to be listed whoever
		// owns it (sudo cleanroom run in a user's checkout).
		base := []string{"-c", "core.fsmonitor=false", "-c", "safe.directory=*", "-C", dir}
		cmd := exec.CommandContext(ctx, "git", append(base, args...)...)
		cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1")
		b, err := cmd.Output()
		if err != nil {
			return nil, err
		}
		var out []string
		for _, s := range strings.Split(string(b), "\x00") {
			if s != "" {
				out = append(out, s)
			}
		}
		return out, nil
	}
	if _, err := git("rev-parse", "--is-inside-work-tree"); err != nil {
		return nil, nil, false
	}
	tracked, err := git("ls-files", "-z", "--cached")
	if err != nil {
		return nil, nil, false
	}
	untracked, err = git("ls-files", "-z", "--others", "--exclude-standard")
	if err != nil {
		return nil, nil, false
	}
	return tracked, untracked, true
}

// copier copies source entries; dirs caches the source directories
// already checked to be real directories.
type copier struct {
	src, dst *longpath.Dir
	dirs     map[string]bool
}

// copyEntry copies one entry (file, symlink, directory, recursively for a
// directory listed whole) from src/rel to dst/rel, creating parents. Modes
// are kept without setuid/setgid; owners are kept. Regular files are cloned
// when the filesystems allow (FICLONE), else copied with copy_file_range.
// A tracked file deleted from the work tree is skipped, and so is one whose
// parent is a symlink or not a directory (git, too, sees such a file as
// deleted; following the link would copy whatever it points at). Both
// trees are rooted longpath.Dirs, so a tree deeper than PATH_MAX copies like
// any other and no path leaves either tree.
func (c *copier) copyEntry(e sourceEntry) (int64, error) {
	rel := filepath.FromSlash(e.rel)
	if ok, err := c.realDir(filepath.Dir(rel)); err != nil || !ok {
		return 0, err
	}
	fi, err := c.src.Lstat(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if err := mkdirParents(c.src, c.dst, filepath.Dir(rel)); err != nil {
		return 0, err
	}
	if e.dirAlone && fi.IsDir() {
		return 0, mkdirLike(c.dst, rel, fi)
	}
	return copyNode(c.src, c.dst, rel, fi)
}

// realDir reports whether dir and each of its parents in the source is a
// directory, not a symlink (false, nil when one is not, or is missing).
func (c *copier) realDir(dir string) (bool, error) {
	if dir == "." || dir == "" {
		return true, nil
	}
	if ok, seen := c.dirs[dir]; seen {
		return ok, nil
	}
	ok, err := c.realDir(filepath.Dir(dir))
	if err != nil || !ok {
		c.dirs[dir] = false
		return false, err
	}
	fi, err := c.src.Lstat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
		ok = false
	case err != nil:
		return false, err
	default:
		ok = fi.IsDir()
	}
	c.dirs[dir] = ok
	return ok, nil
}

// mkdirParents creates dst/dir and its parents with the modes of src's
// (copyEntry has checked they are real directories).
func mkdirParents(src, dst *longpath.Dir, dir string) error {
	if dir == "." || dir == "" {
		return nil
	}
	if _, err := dst.Lstat(dir); err == nil {
		return nil
	}
	if err := mkdirParents(src, dst, filepath.Dir(dir)); err != nil {
		return err
	}
	fi, err := src.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	return mkdirLike(dst, dir, fi)
}

func mkdirLike(dst *longpath.Dir, rel string, fi fs.FileInfo) error {
	if err := dst.Mkdir(rel, fi.Mode().Perm()|0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	chownLike(dst, rel, fi)
	return dst.Chmod(rel, fi.Mode().Perm()|(fi.Mode()&fs.ModeSticky))
}

func chownLike(dst *longpath.Dir, rel string, fi fs.FileInfo) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		dst.Lchown(rel, int(st.Uid), int(st.Gid))
	}
}

func copyNode(src, dst *longpath.Dir, rel string, fi fs.FileInfo) (int64, error) {
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := src.Readlink(rel)
		if err != nil {
			return 0, err
		}
		if err := dst.Symlink(target, rel); err != nil {
			return 0, err
		}
		chownLike(dst, rel, fi)
		return 0, nil
	case fi.IsDir():
		if err := mkdirLike(dst, rel, fi); err != nil {
			return 0, err
		}
		ents, err := src.ReadDir(rel)
		if err != nil {
			return 0, err
		}
		var total int64
		for _, e := range ents {
			child := filepath.Join(rel, e.Name())
			if e.Name() == ".git" {
				continue
			}
			if _, err := dst.Lstat(child); err == nil {
				continue // listed on its own too
			}
			cfi, err := src.Lstat(child)
			if err != nil {
				return total, err
			}
			n, err := copyNode(src, dst, child, cfi)
			total += n
			if err != nil {
				return total, err
			}
		}
		return total, nil
	case fi.Mode().IsRegular():
		return copyFile(src, dst, rel, fi)
	default:
		return 0, nil // sockets, FIFOs, devices are not source
	}
}

func copyFile(src, dst *longpath.Dir, rel string, fi fs.FileInfo) (int64, error) {
	in, err := src.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := dst.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	n := fi.Size()
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) != nil {
		// io.Copy between files uses copy_file_range (a reflink where the
		// filesystem shares extents, an in-kernel copy otherwise).
		if n, err = io.Copy(out, in); err != nil {
			out.Close()
			return n, err
		}
	}
	chownLike(dst, rel, fi)
	if err := out.Chmod(fi.Mode().Perm()); err != nil {
		out.Close()
		return n, err
	}
	return n, out.Close()
}

// DefaultArtifactSizeLimit caps each artifact (Config.ArtifactSizeLimit).
// Signing reads an artifact whole, so the cap also bounds that memory.
const DefaultArtifactSizeLimit = 2 << 30

// collectArtifacts matches and hashes the artifacts in the run's workspace,
// bounded by the last step's timeout and the size cap. Its errors are the
// step's (exit 1): a missing artifact, an unattestable name, a size over
// the cap, hashing past the deadline.
func collectArtifacts(ctx context.Context, cfg Config, globs []string) ([]manifest.Subject, error) {
	limit := cfg.ArtifactSizeLimit
	if limit == 0 {
		limit = DefaultArtifactSizeLimit
	}
	timeout := pipeline.DefaultTimeout
	if n := len(cfg.Pipeline.Steps); n > 0 && cfg.Pipeline.Steps[n-1].Timeout > 0 {
		timeout = cfg.Pipeline.Steps[n-1].Timeout
	}
	hctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("artifact hashing exceeded %s (the last step's timeout)", timeout))
	defer cancel()
	subjects, err := manifest.MatchArtifactsBounded(hctx, cfg.ws.Dir, globs, limit)
	if err != nil {
		return nil, err
	}
	for _, s := range subjects {
		// A step names its files: a name the provenance cannot carry is
		// the build's failure (exit 1), not the runner's.
		if !utf8.ValidString(s.Name) || strings.ContainsFunc(s.Name, unicode.IsControl) {
			return nil, fmt.Errorf("artifact %q: a name with control characters or invalid UTF-8 cannot be attested", s.Name)
		}
	}
	return subjects, nil
}

// publishArtifacts copies each artifact of a fresh workspace to its path in
// the source directory, where the user expects it (through an os.Root of
// it, refusing symlinks on the way), owned by the source directory's owner.
// Its errors are the host's (the user's disk full or unwritable): an
// infrastructure failure (exit 2), not the build's.
func publishArtifacts(cfg Config, subjects []manifest.Subject) error {
	if cfg.ws.Mode != WorkspaceFresh {
		return nil
	}
	dest := cfg.Workspace
	if cfg.ArtifactsDir != "" {
		dest = cfg.ArtifactsDir
		if err := os.MkdirAll(dest, 0o755); err != nil {
			return err
		}
	}
	root, err := os.OpenRoot(dest)
	if err != nil {
		return err
	}
	defer root.Close()
	own := ownerOf(cfg.Workspace)
	for _, s := range subjects {
		rel := filepath.FromSlash(s.Name)
		// An in-workspace symlink is published as its target (matching
		// checked that it stays inside).
		src, err := filepath.EvalSymlinks(filepath.Join(cfg.ws.Dir, rel))
		if err != nil {
			return err
		}
		fi, err := os.Lstat(src)
		if err != nil {
			return err
		}
		if err := copyIntoAs(root, src, rel, fi.Mode().Perm(), own); err != nil {
			return fmt.Errorf("copy artifact %q to %s: %w", s.Name, dest, err)
		}
	}
	return nil
}
