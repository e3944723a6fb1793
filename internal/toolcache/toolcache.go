// Package toolcache remembers the output of a command that describes a
// host tool (`go env GOPROXY`, `runc --version`), so that starting a run
// does not exec it every time. An entry is keyed by the tool's resolved
// path, size and modification time, and by the size and modification time
// of any further files the answer depends on (a configuration file);
// replacing or editing any of them makes the next call ask again.
package toolcache

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/cleanroom-ci/cleanroom/internal/atomicfile"
)

type entry struct {
	Key    string `json:"key"`
	Output []byte `json:"output"`
}

// Output runs name with args and returns its standard output, or returns
// the output remembered under dir for the same tool, arguments and
// dependencies. With dir empty it always runs the command. A failed
// command is not remembered.
func Output(dir, name string, args []string, deps ...string) ([]byte, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return nil, err
	}
	if abs, err := filepath.EvalSymlinks(path); err == nil {
		path = abs
	}
	key := fingerprint(append([]string{path}, deps...), args)
	file := ""
	if dir != "" {
		sum := sha256.Sum256([]byte(path + "\x00" + strings.Join(args, "\x00")))
		file = filepath.Join(dir, hex.EncodeToString(sum[:8])+".json")
		if b, err := os.ReadFile(file); err == nil {
			var e entry
			if json.Unmarshal(b, &e) == nil && e.Key == key {
				return e.Output, nil
			}
		}
	}
	out, err := exec.Command(path, args...).Output()
	if err != nil || file == "" {
		return out, err
	}
	if b, merr := json.Marshal(entry{Key: key, Output: out}); merr == nil {
		if os.MkdirAll(dir, 0o700) == nil {
			_ = atomicfile.WriteFile(file, b, 0o600) // a cache: failing to keep it only costs the next exec
		}
	}
	return out, nil
}

// fingerprint describes files by path, size and modification time (a
// missing file is part of the key too) and the arguments.
func fingerprint(files, args []string) string {
	var b strings.Builder
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, "%s\x00%d\x00%d\x00", f, st.Size(), st.ModTime().UnixNano())
		} else {
			fmt.Fprintf(&b, "%s\x00missing\x00", f)
		}
	}
	b.WriteString(strings.Join(args, "\x00"))
	return b.String()
}
