package runner

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/cleanroom-ci/cleanroom/sandbox"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
)

// secretEnv turns secrets into KEY=VALUE entries, sorted by name.
func secretEnv(secrets map[string]string) []string {
	out := make([]string, 0, len(secrets))
	for k, v := range secrets {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// masker replaces secret values, and their common encodings, with
// [masked]. Masked forms of each value (at least 4 bytes, which the CLI
// enforces): the value itself and lower-cased (host names are normalised
// to lower case), hex in both cases, URL query escaping, and standard and
// URL-safe base64 at each of the three byte alignments the value can have
// inside a longer encoded text (the characters that depend on the value
// alone). What it cannot catch: a value split across lines or requests,
// reversed, compressed, encrypted, or encoded any other way; and anything
// a step writes into its artifacts.
type masker struct{ values [][]byte }

func newMasker(secrets map[string]string) *masker {
	m := &masker{}
	seen := map[string]bool{}
	add := func(v string) {
		// Very short forms would mask ordinary text everywhere.
		if len(v) >= 4 && !seen[v] {
			seen[v] = true
			m.values = append(m.values, []byte(v))
		}
	}
	for _, v := range secrets {
		if len(v) < 4 {
			continue
		}
		add(v)
		add(strings.ToLower(v))
		add(hex.EncodeToString([]byte(v)))
		add(strings.ToUpper(hex.EncodeToString([]byte(v))))
		add(url.QueryEscape(v))
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
			for k := 0; k < 3; k++ {
				if f := base64Fragment(enc, []byte(v), k); len(f) >= 6 {
					add(f)
				}
			}
		}
	}
	// Longest first, so a value that contains another is masked whole.
	sort.Slice(m.values, func(i, j int) bool { return len(m.values[i]) > len(m.values[j]) })
	return m
}

// base64Fragment is the part of the base64 encoding of v, placed k bytes
// into a text, that depends on v alone: characters whose six bits all come
// from v.
func base64Fragment(enc *base64.Encoding, v []byte, k int) string {
	text := enc.WithPadding(base64.NoPadding).EncodeToString(append(make([]byte, k), v...))
	first := (8*k + 5) / 6         // first character starting at or after bit 8k
	last := (8 * (k + len(v))) / 6 // characters ending at or before the value's end
	if first >= last || last > len(text) {
		return ""
	}
	return text[first:last]
}

func (m *masker) apply(b []byte) []byte {
	for _, v := range m.values {
		b = bytes.ReplaceAll(b, v, masked)
	}
	return b
}

// String masks s.
func (m *masker) String(s string) string {
	if m == nil || len(m.values) == 0 {
		return s
	}
	return string(m.apply([]byte(s)))
}

// maskWriter masks secrets (see masker) in a step's output before it
// reaches the terminal or a log file. It works on whole lines, so a value
// split across two writes is still caught.
type maskWriter struct {
	w      io.Writer
	values [][]byte
	m      *masker
	buf    []byte
}

// masked is what a secret value is replaced with.
var masked = []byte("[masked]")

func newMaskWriter(w io.Writer, secrets map[string]string) *maskWriter {
	m := newMasker(secrets)
	return &maskWriter{w: w, m: m, values: m.values}
}

func (m *maskWriter) Write(b []byte) (int, error) {
	if len(m.values) == 0 {
		return m.w.Write(b)
	}
	n := len(b)
	m.buf = append(m.buf, b...)
	for {
		i := bytes.IndexByte(m.buf, '\n')
		if i < 0 {
			if len(m.buf) > maxLine {
				m.emit(m.buf)
				m.buf = m.buf[:0]
			}
			return n, nil
		}
		m.emit(m.buf[:i+1])
		m.buf = m.buf[i+1:]
	}
}

func (m *maskWriter) emit(line []byte) {
	m.w.Write(m.m.apply(line))
}

// Flush writes a pending partial line.
func (m *maskWriter) Flush() {
	if len(m.buf) > 0 {
		m.emit(m.buf)
		m.buf = nil
	}
}

// stripSetIDMounts clears setuid and setgid bits in every read-write
// mount the step had (the workspace, the GitLab cache directory): each is
// a host directory, and with idmapped mounts the step's root writes there
// as the directory's owner, host root for a root-owned one. Read-only
// mounts are the host's own files, which the step could not change.
func stripSetIDMounts(mounts []sandbox.Mount, log hclog.Logger) error {
	var errs []error
	for _, m := range mounts {
		if m.ReadOnly || m.Source == "" {
			continue
		}
		fi, err := os.Lstat(m.Source)
		switch {
		case err != nil:
			errs = append(errs, err)
		case fi.IsDir():
			errs = append(errs, stripSetID(m.Source, log))
		case fi.Mode().IsRegular() && fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0:
			errs = append(errs, os.Chmod(m.Source, fi.Mode().Perm()|fi.Mode()&os.ModeSticky))
		}
	}
	return errors.Join(errs...)
}

// stripSetID clears setuid and setgid bits on everything in the workspace
// after a step. Steps run as root in their sandbox, and a reused workspace
// is the host's directory: a setuid-root file left there would be a
// privilege escalation waiting for whoever runs it on the host.
//
// The walk descends with openat from the parent's descriptor, never by
// path, so no depth (a tree deeper than PATH_MAX) escapes it; symlinks are
// never followed. Anything it cannot open or change is an error, never a
// silent skip: the caller fails the step.
func stripSetID(workspace string, log hclog.Logger) error {
	if workspace == "" {
		return nil
	}
	fd, err := unix.Open(workspace, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open workspace: %w", err)
	}
	return stripSetIDAt(fd, ".", log)
}

// stripSetIDAt clears the bits below the directory open as dirfd (named
// rel in messages) and closes dirfd.
func stripSetIDAt(dirfd int, rel string, log hclog.Logger) error {
	dir := os.NewFile(uintptr(dirfd), rel)
	defer dir.Close()
	for {
		names, err := dir.Readdirnames(1024)
		for _, name := range names {
			if err := stripSetIDEntry(dirfd, rel, name, log); err != nil {
				return err
			}
		}
		if err == io.EOF || (err == nil && len(names) == 0) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", rel, err)
		}
	}
}

func stripSetIDEntry(dirfd int, rel, name string, log hclog.Logger) error {
	path := filepath.Join(rel, name)
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		return nil
	case unix.S_IFDIR:
		if st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
			// setgid on a directory only passes a group down; cleared too,
			// so nothing the step made keeps an id bit.
			if err := clearAt(dirfd, name, st.Mode, path, log); err != nil {
				return err
			}
		}
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open %s: %w", path, err)
		}
		return stripSetIDAt(fd, path, log)
	default:
		if st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
			return clearAt(dirfd, name, st.Mode, path, log)
		}
		return nil
	}
}

// clearAt removes the setuid/setgid bits of name (not a symlink: checked
// by the caller, and the step that could swap it has ended).
func clearAt(dirfd int, name string, mode uint32, path string, log hclog.Logger) error {
	if err := unix.Fchmodat(dirfd, name, mode&0o1777, 0); err != nil {
		return fmt.Errorf("clear the setuid/setgid bit of %s: %w", path, err)
	}
	log.Warn("cleared a setuid/setgid bit the step left in the workspace", "path", path)
	return nil
}

// maskDenials masks secrets in what a step's denials recorded: the step
// chose the host names, and may have spelled a secret into them.
func maskDenials(secrets map[string]string, ds []egress.Denial, need []string) ([]egress.Denial, []string) {
	if len(secrets) == 0 {
		return ds, need
	}
	m := newMasker(secrets)
	for i := range ds {
		ds[i].Target, ds[i].Hint, ds[i].Reason = m.String(ds[i].Target), m.String(ds[i].Hint), m.String(ds[i].Reason)
	}
	for i := range need {
		need[i] = m.String(need[i])
	}
	return ds, need
}

// MaskingWriter masks secrets (see masker) in whole lines written to w:
// the CLI passes its log output through it.
func MaskingWriter(w io.Writer, secrets map[string]string) io.Writer {
	return &lockedWriter{mu: new(sync.Mutex), w: newMaskWriter(w, secrets)}
}
