package runner

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

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

// publish moves the run's outputs from the staging directory into outDir.
// Each file is written to a temporary name and renamed, so a reader (or a
// full disk) never sees a partial file presented as complete.
func publish(stage, outDir string) error {
	if err := os.MkdirAll(filepath.Join(outDir, "logs"), 0o755); err != nil {
		return err
	}
	// Logs and signatures of an earlier run must not pass for this run's.
	old, _ := filepath.Glob(filepath.Join(outDir, "logs", "*.log"))
	for _, f := range old {
		os.Remove(f)
	}
	filepath.Walk(outDir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && strings.HasSuffix(p, ".sigstore.json") {
			os.Remove(p)
		}
		return nil
	})
	return filepath.Walk(stage, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(stage, path)
		if fi.IsDir() {
			if rel == "empty" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(outDir, rel), 0o755)
		}
		return atomicfile.Copy(path, filepath.Join(outDir, rel), 0o644)
	})
}
