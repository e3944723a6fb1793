package runner

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
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

// maskWriter replaces secret values in a step's output before it reaches
// the terminal or a log file. It works on whole lines, so a value split
// across two writes is still caught.
type maskWriter struct {
	w      io.Writer
	values [][]byte
	buf    []byte
}

// masked is what a secret value is replaced with.
var masked = []byte("[masked]")

func newMaskWriter(w io.Writer, secrets map[string]string) *maskWriter {
	m := &maskWriter{w: w}
	for _, v := range secrets {
		// Very short values would mask ordinary text everywhere; they are
		// not secrets worth the name and the CLI refuses them.
		if len(v) >= 4 {
			m.values = append(m.values, []byte(v))
		}
	}
	// Longest first, so a value that contains another is masked whole.
	sort.Slice(m.values, func(i, j int) bool { return len(m.values[i]) > len(m.values[j]) })
	return m
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
	out := line
	for _, v := range m.values {
		out = bytes.ReplaceAll(out, v, masked)
	}
	m.w.Write(out)
}

// Flush writes a pending partial line.
func (m *maskWriter) Flush() {
	if len(m.buf) > 0 {
		m.emit(m.buf)
		m.buf = nil
	}
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
