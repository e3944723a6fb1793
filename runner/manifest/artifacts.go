package manifest

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/cleanroom-ci/cleanroom/internal/glob"
)

// ErrOutsideWorkspace is wrapped by MatchArtifacts errors for a match, or a
// directory on the way to one, that resolves outside the workspace. A build
// step controls the workspace, so it could otherwise plant a symlink that
// makes the runner attest (and publish) a file of the host.
var ErrOutsideWorkspace = errors.New("resolves outside the workspace")

// MatchArtifacts expands artifact globs relative to workspace and hashes
// every match.
//
// Globs are internal/glob's: path.Match syntax per segment, plus "**" as a
// whole segment for any number of directories (including none). Matching is on the lexical
// tree: "*" also matches names starting with a dot. A symlink is allowed
// only if it resolves inside the workspace, and is then hashed as its target
// under its own name. A symlinked directory on the way to a match is
// refused, and "**" never descends into one: matching follows the lexical
// tree, as the fresh workspace's exclusion of artifacts does, so a link
// cannot lead a glob to an untracked file the copy let in (and loops are
// avoided). It is an error, naming the path, when a match
// resolves outside the workspace, is a directory (the message suggests
// "dir/**"), or is neither a file nor a directory; and an error, naming the
// glob, when a glob matches nothing. Absolute globs and "." or ".." segments
// are refused.
//
// The result is sorted by Name (workspace-relative slash path), without
// duplicates when globs overlap.
func MatchArtifacts(workspace string, globs []string) ([]Subject, error) {
	return MatchArtifactsBounded(context.Background(), workspace, globs, 0)
}

// ErrArtifactTooLarge is wrapped when an artifact is over the size cap.
var ErrArtifactTooLarge = errors.New("artifact over the size cap")

// MatchArtifactsBounded is MatchArtifacts with hashing stopped when ctx
// ends (a step's deadline) and any match larger than maxBytes refused
// before it is read (maxBytes <= 0: no cap). A step can make a sparse file
// of any size in milliseconds; without these the runner would spend
// minutes reading zeros.
func MatchArtifactsBounded(ctx context.Context, workspace string, globs []string, maxBytes int64) ([]Subject, error) {
	abs, err := filepath.Abs(workspace)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, fmt.Errorf("manifest: workspace: %w", err)
	}
	found := map[string]string{} // name → resolved path
	for _, g := range globs {
		pat, err := CompileGlob(g)
		if err != nil {
			return nil, err
		}
		m := &globMatcher{root: real, found: map[string]string{}}
		if err := m.match("", real, pat.Segments()); err != nil {
			return nil, fmt.Errorf("manifest: artifact glob %q: %w", g, err)
		}
		if len(m.found) == 0 {
			return nil, fmt.Errorf("manifest: artifact glob %q matched no files", g)
		}
		for name, p := range m.found {
			found[name] = p
		}
	}
	return hashArtifacts(ctx, found, maxBytes)
}

// CompileGlob compiles an artifact glob: internal/glob checks the syntax
// (an empty pattern, a segment path.Match cannot parse), and this rejects
// what internal/glob allows but an artifact glob must not be: a form that
// could name something outside the workspace (absolute, a ".." segment),
// an empty or "." segment, or "**" inside a segment (which the dialect
// reads as "*", but which in an artifact path is more likely a mistake).
func CompileGlob(g string) (glob.Pattern, error) {
	pat, err := glob.Compile(g)
	if err != nil {
		return glob.Pattern{}, fmt.Errorf("manifest: artifact glob %w", err)
	}
	if path.IsAbs(g) || filepath.IsAbs(g) {
		return glob.Pattern{}, fmt.Errorf("manifest: artifact glob %q is absolute; globs are relative to the workspace", g)
	}
	for _, s := range strings.Split(g, "/") {
		switch {
		case s == "" || s == ".":
			return glob.Pattern{}, fmt.Errorf("manifest: artifact glob %q has an empty or '.' segment", g)
		case s == "..":
			return glob.Pattern{}, fmt.Errorf("manifest: artifact glob %q contains '..'", g)
		case s != "**" && strings.Contains(s, "**"):
			return glob.Pattern{}, fmt.Errorf("manifest: artifact glob %q: '**' must be a whole path segment", g)
		}
	}
	return pat, nil
}

// globMatcher matches one glob. Every directory it reads is given both as
// the lexical workspace-relative name (what subjects are called) and as a
// resolved path already checked to be inside root.
type globMatcher struct {
	root  string
	found map[string]string
}

func (m *globMatcher) match(rel, dir string, segs []string) error {
	seg := segs[0]
	if seg == "**" {
		if len(segs) == 1 {
			return m.all(rel, dir)
		}
		if err := m.match(rel, dir, segs[1:]); err != nil {
			return err
		}
		des, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, de := range des {
			if de.IsDir() { // lexical: a symlink is not a directory here
				if err := m.match(path.Join(rel, de.Name()), filepath.Join(dir, de.Name()), segs); err != nil {
					return err
				}
			}
		}
		return nil
	}
	names, err := matchNames(dir, seg)
	if err != nil {
		return err
	}
	for _, name := range names {
		childRel, child := path.Join(rel, name), filepath.Join(dir, name)
		if len(segs) == 1 {
			if err := m.candidate(childRel, child, true); err != nil {
				return err
			}
			continue
		}
		if _, err := os.Stat(child); errors.Is(err, fs.ErrNotExist) {
			continue // a dangling link on the way holds nothing to match
		}
		if li, err := os.Lstat(child); err == nil && li.Mode()&fs.ModeSymlink != 0 {
			// Matching is lexical, like the fresh copy's exclusion of
			// artifacts: through a symlinked directory a glob would reach
			// an untracked file the copy let in (a stale output) and
			// attest it as this run's.
			if _, info, err := m.resolve(childRel, child); err != nil {
				return err
			} else if info.IsDir() {
				return fmt.Errorf("%s is a symlink to a directory; artifacts are matched on the real tree (name the directory it points to)", childRel)
			}
			continue
		}
		resolved, info, err := m.resolve(childRel, child)
		if err != nil {
			return err
		}
		if info.IsDir() {
			if err := m.match(childRel, resolved, segs[1:]); err != nil {
				return err
			}
		}
	}
	return nil
}

// matchNames lists the entries of dir matching one segment. A segment
// without metacharacters is looked up directly, which also keeps a glob
// naming one file cheap in a huge directory.
func matchNames(dir, seg string) ([]string, error) {
	if !strings.ContainsAny(seg, `*?[\`) {
		if _, err := os.Lstat(filepath.Join(dir, seg)); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil, nil
			}
			return nil, err
		}
		return []string{seg}, nil
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, de := range des {
		if glob.MatchSegment(seg, de.Name()) {
			names = append(names, de.Name())
		}
	}
	return names, nil
}

// all collects every non-directory below dir for a trailing "**",
// descending real directories only.
func (m *globMatcher) all(rel, dir string) error {
	des, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, de := range des {
		childRel, child := path.Join(rel, de.Name()), filepath.Join(dir, de.Name())
		var err error
		if de.IsDir() {
			err = m.all(childRel, child)
		} else {
			err = m.candidate(childRel, child, false)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// resolve follows p through any symlinks and checks the result is inside
// the workspace. The check compares path components (filepath.Rel), so a
// workspace /ws does not accept /ws2/x.
func (m *globMatcher) resolve(rel, p string) (string, os.FileInfo, error) {
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		if li, lerr := os.Lstat(p); lerr == nil && li.Mode()&fs.ModeSymlink != 0 && errors.Is(err, fs.ErrNotExist) {
			return "", nil, fmt.Errorf("%s is a dangling symlink", rel)
		}
		return "", nil, fmt.Errorf("%s: %w", rel, err)
	}
	if !within(m.root, r) {
		return "", nil, fmt.Errorf("%s %w (%s)", rel, ErrOutsideWorkspace, r)
	}
	info, err := os.Stat(r)
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", rel, err)
	}
	return r, info, nil
}

// candidate records a match. explicit is false under a trailing "**",
// where a symlink to a directory inside the workspace is skipped rather
// than refused.
func (m *globMatcher) candidate(rel, p string, explicit bool) error {
	resolved, info, err := m.resolve(rel, p)
	if err != nil {
		return err
	}
	switch {
	case info.IsDir() && explicit:
		return fmt.Errorf("%s is a directory; use %q to attest the files in it", rel, rel+"/**")
	case info.IsDir():
		return nil
	case !info.Mode().IsRegular():
		return fmt.Errorf("%s is not a regular file (%s)", rel, info.Mode().Type())
	}
	m.found[rel] = resolved
	return nil
}

// within reports whether p is root or below it.
func within(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	if err != nil || filepath.IsAbs(rel) {
		return false
	}
	return rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// hashArtifacts hashes the matched files in parallel and returns them as
// sorted subjects. Paths are already resolved, so opening them without
// following symlinks turns a link planted after matching into an error.
func hashArtifacts(ctx context.Context, found map[string]string, maxBytes int64) ([]Subject, error) {
	out := make([]Subject, 0, len(found))
	for name := range found {
		out = append(out, Subject{Name: name})
	}
	slices.SortFunc(out, func(a, b Subject) int { return cmp.Compare(a.Name, b.Name) })
	errs := make([]error, len(out))
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i := range out {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if fi, err := os.Lstat(found[out[i].Name]); err == nil && maxBytes > 0 && fi.Size() > maxBytes {
				errs[i] = fmt.Errorf("manifest: artifact %s is %d bytes, over the cap of %d bytes: %w", out[i].Name, fi.Size(), maxBytes, ErrArtifactTooLarge)
				return
			}
			sum, _, err := hashNoFollow(ctx, found[out[i].Name])
			if err != nil {
				if ctx.Err() != nil {
					err = fmt.Errorf("hashing stopped at the deadline: %w", context.Cause(ctx))
				}
				errs[i] = fmt.Errorf("manifest: hashing artifact %s: %w", out[i].Name, err)
				return
			}
			out[i].SHA256 = hex.EncodeToString(sum[:])
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// GlobSet is a list of artifact globs compiled once, for matching many
// names (every file of a workspace copy).
type GlobSet []glob.Pattern

// NewGlobSet compiles the artifact globs. A glob that does not compile is
// left out: MatchArtifacts reports it when the artifacts are collected.
func NewGlobSet(globs []string) GlobSet {
	var s GlobSet
	for _, g := range globs {
		if p, err := CompileGlob(g); err == nil {
			s = append(s, p)
		}
	}
	return s
}

// Match reports whether the workspace-relative slash path rel is named by
// one of the globs (the syntax of MatchArtifacts), lexically: no file is
// looked at.
func (s GlobSet) Match(rel string) bool {
	for _, p := range s {
		if p.Match(rel) {
			return true
		}
	}
	return false
}
