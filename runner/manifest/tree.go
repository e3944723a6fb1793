package manifest

import (
	"bufio"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/cleanroom-ci/cleanroom/internal/longpath"
)

// DefaultTreeExcludes are the workspace-relative paths TreeDigest skips
// unless told otherwise: git's own database, which says nothing about the
// files being built, and cleanroom's output directory, which the run itself
// writes into.
var DefaultTreeExcludes = []string{".cleanroom", ".git"}

// TreeOption adjusts TreeDigest.
type TreeOption func(*treeConfig)

type treeConfig struct {
	excludes []string
}

// WithExcludes replaces DefaultTreeExcludes: each is a workspace-relative
// slash path (a directory or a file) skipped with everything below it.
// Matching is exact on the whole path; WithExcludes() with no argument
// digests everything.
func WithExcludes(rel ...string) TreeOption {
	return func(c *treeConfig) { c.excludes = rel }
}

// treeEntry is one line of the listing. Workers fill sum for regular files;
// the walker fills everything else before handing the entry over.
type treeEntry struct {
	rel   string
	mode  fs.FileMode
	value string // symlink target, or "-" for entries without content
	sum   [sha256.Size]byte
	file  bool
}

// TreeDigest returns the sha256 of a listing of the tree under root, and the
// number of entries listed.
//
// The listing has one line per file, directory, symlink or other entry
// below root (root itself excluded), sorted by path in byte order:
//
//	<path>\t<mode>\t<value>\n
//
// where path is slash-separated and relative to root, mode is the octal
// st_mode (type bits, permission bits, setuid/setgid/sticky; e.g. 100644,
// 040755, 120777), and value is the sha256 hex of a regular file's content,
// the target of a symlink (never followed), or "-" for anything else. In
// path and target a backslash, tab or newline is written as \\, \t, \n.
// Ownership and times are not part of it: they change on every checkout.
// DefaultTreeExcludes (or the paths given WithExcludes) are left out with
// everything below them.
// docs/buildtype.md repeats this so the digest can be recomputed elsewhere.
//
// Files are hashed by a pool of workers (GOMAXPROCS when workers <= 0),
// each streaming through one fixed buffer, so memory does not grow with file
// sizes. A file that changes type while being read is an error.
func TreeDigest(ctx context.Context, root string, workers int, opts ...TreeOption) (digestHex string, entries int, err error) {
	cfg := treeConfig{excludes: DefaultTreeExcludes}
	for _, o := range opts {
		o(&cfg)
	}
	excluded, err := excludeSet(cfg.excludes)
	if err != nil {
		return "", 0, err
	}
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	info, err := os.Stat(root)
	if err != nil {
		return "", 0, fmt.Errorf("manifest: %w", err)
	}
	if !info.IsDir() {
		return "", 0, fmt.Errorf("manifest: %s is not a directory", root)
	}

	dir, err := longpath.Open(root)
	if err != nil {
		return "", 0, fmt.Errorf("manifest: %w", err)
	}
	defer dir.Close()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	jobs := make(chan *treeEntry, 4*workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for e := range jobs {
				if ctx.Err() != nil {
					continue // drain
				}
				sum, info, err := hashNoFollowIn(ctx, dir, filepath.FromSlash(e.rel))
				if err != nil {
					cancel(fmt.Errorf("manifest: hashing %s: %w", e.rel, err))
					continue
				}
				e.sum, e.mode = sum, info.Mode()
			}
		})
	}
	w := &treeWalker{ctx: ctx, dir: dir, excluded: excluded, jobs: jobs}
	walkErr := w.walk("")
	if walkErr != nil {
		cancel(walkErr)
	}
	close(jobs)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return "", 0, err
	}
	return listingDigest(w.entries), len(w.entries), nil
}

// excludeSet validates and normalises exclusions.
func excludeSet(rels []string) (map[string]bool, error) {
	set := map[string]bool{}
	for _, r := range rels {
		c := path.Clean(r)
		if r == "" || path.IsAbs(r) || c == "." || c == ".." || strings.HasPrefix(c, "../") {
			return nil, fmt.Errorf("manifest: exclusion %q must be a relative path inside the tree", r)
		}
		set[c] = true
	}
	return set, nil
}

type treeWalker struct {
	ctx      context.Context
	dir      *longpath.Dir // paths deeper than PATH_MAX are walked too
	excluded map[string]bool
	jobs     chan<- *treeEntry
	entries  []*treeEntry
}

// walk lists dir (relative, "" for root) depth-first, queueing regular
// files for the workers as soon as they are seen so that hashing overlaps
// with the walk.
func (w *treeWalker) walk(dir string) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	des, err := w.dir.ReadDir(filepath.FromSlash(path.Join(".", dir)))
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	for _, de := range des {
		rel := path.Join(dir, de.Name())
		if w.excluded[rel] {
			continue
		}
		e := &treeEntry{rel: rel, value: "-"}
		w.entries = append(w.entries, e)
		if de.Type().IsRegular() {
			e.file = true
			select {
			case w.jobs <- e:
			case <-w.ctx.Done():
				return w.ctx.Err()
			}
			continue
		}
		abs := filepath.FromSlash(rel)
		info, err := w.dir.Lstat(abs)
		if err != nil {
			return fmt.Errorf("manifest: %w", err)
		}
		e.mode = info.Mode()
		switch {
		case e.mode&fs.ModeSymlink != 0:
			if e.value, err = w.dir.Readlink(abs); err != nil {
				return fmt.Errorf("manifest: %w", err)
			}
		case e.mode.IsDir():
			if err := w.walk(rel); err != nil {
				return err
			}
		}
	}
	return nil
}

// listingDigest sorts the entries and hashes their listing line by line.
func listingDigest(entries []*treeEntry) string {
	slices.SortFunc(entries, func(a, b *treeEntry) int { return cmp.Compare(a.rel, b.rel) })
	h := sha256.New()
	bw := bufio.NewWriterSize(h, 64<<10)
	var hexSum [2 * sha256.Size]byte
	for _, e := range entries {
		bw.WriteString(escapeListing(e.rel))
		fmt.Fprintf(bw, "\t%06o\t", unixMode(e.mode))
		if e.file {
			hex.Encode(hexSum[:], e.sum[:])
			bw.Write(hexSum[:])
		} else {
			bw.WriteString(escapeListing(e.value))
		}
		bw.WriteByte('\n')
	}
	bw.Flush()
	return hex.EncodeToString(h.Sum(nil))
}

var listingEscaper = strings.NewReplacer(`\`, `\\`, "\t", `\t`, "\n", `\n`)

func escapeListing(s string) string {
	if !strings.ContainsAny(s, "\\\t\n") {
		return s
	}
	return listingEscaper.Replace(s)
}

// unixMode converts a Go file mode to the st_mode number ls and stat show,
// which is what the listing format promises.
func unixMode(m fs.FileMode) uint32 {
	var t uint32
	switch {
	case m.IsRegular():
		t = 0o100000
	case m&fs.ModeSymlink != 0:
		t = 0o120000
	case m.IsDir():
		t = 0o040000
	case m&fs.ModeNamedPipe != 0:
		t = 0o010000
	case m&fs.ModeSocket != 0:
		t = 0o140000
	case m&fs.ModeCharDevice != 0:
		t = 0o020000
	case m&fs.ModeDevice != 0:
		t = 0o060000
	}
	u := t | uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}
