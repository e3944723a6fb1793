package runner

import (
	"bytes"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/hashicorp/go-hclog"
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
// after a step. Steps run as root in their sandbox, and the workspace is the
// host's directory: a setuid-root file left there would be a privilege
// escalation waiting for whoever runs it on the host.
func stripSetID(workspace string, log hclog.Logger) {
	if workspace == "" {
		return
	}
	filepath.WalkDir(workspace, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		mode := info.Mode()
		if mode&(fs.ModeSetuid|fs.ModeSetgid) == 0 {
			return nil
		}
		if err := os.Chmod(path, mode.Perm()|(mode&fs.ModeSticky)); err != nil {
			log.Warn("cannot clear setuid/setgid bit left by the step", "path", path, "error", err)
			return nil
		}
		log.Warn("cleared a setuid/setgid bit the step left in the workspace", "path", path)
		return nil
	})
}
