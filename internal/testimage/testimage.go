// Package testimage builds the tests' step image from Debian's
// busybox-static, so no test needs a registry.
package testimage

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cleanroom-ci/cleanroom/internal/testenv"
)

// BusyboxPath is where Debian's busybox-static installs the static binary.
const BusyboxPath = "/bin/busybox"

var busybox = &cachedImage{name: "busybox"}

// Busybox returns the path of an OCI archive of a busybox image, built once
// per test binary into a shared temporary directory.
func Busybox(t testing.TB) string {
	t.Helper()
	return busybox.get(t)
}

var goModTools = &cachedImage{
	name: "go",
	env:  []string{"PATH=/usr/local/go/bin:/usr/sbin:/usr/bin:/sbin:/bin", "GOROOT=/usr/local/go"},
	fill: func(root, _ string) error {
		goroot := runtimeGOROOT()
		for _, f := range []string{"bin/go", "go.env", "VERSION"} {
			dst := filepath.Join(root, "usr/local/go", f)
			os.MkdirAll(filepath.Dir(dst), 0o755)
			if err := copyFile(filepath.Join(goroot, f), dst); err != nil {
				return err
			}
		}
		return nil
	},
}

// GoModTools returns an OCI archive of busybox plus the host's `go` command
// (GOROOT/bin/go, go.env, VERSION): enough for `go mod download`, not for
// compiling.
func GoModTools(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(runtimeGOROOT(), "bin", "go")); err != nil {
		testenv.Missing(t, "a Go toolchain at "+runtimeGOROOT())
	}
	return goModTools.get(t)
}

func runtimeGOROOT() string {
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		return strings.TrimSpace(string(out))
	}
	return "/usr/local/go"
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, fi.Mode().Perm())
}
