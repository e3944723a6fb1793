// Package testimage builds the tests' step image from Debian's
// busybox-static, so no test needs a registry.
package testimage

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cleanroom-ci/cleanroom/internal/testenv"
	"github.com/cleanroom-ci/cleanroom/sandbox/imagepack"
)

// BusyboxPath is where Debian's busybox-static installs the static binary.
const BusyboxPath = "/bin/busybox"

var (
	once    sync.Once
	archive string
	err     error
)

// Busybox returns the path of an OCI archive of a busybox image, built once
// per test binary into a shared temporary directory.
func Busybox(t testing.TB) string {
	t.Helper()
	if _, statErr := os.Stat(BusyboxPath); statErr != nil {
		testenv.Missing(t, "busybox-static ("+BusyboxPath+")")
	}
	once.Do(func() {
		var dir string
		dir, err = os.MkdirTemp("", "cleanroom-testimage-")
		if err != nil {
			return
		}
		root := filepath.Join(dir, "rootfs")
		if err = imagepack.BusyboxRootfs(root, BusyboxPath); err != nil {
			return
		}
		img, ierr := imagepack.Image(root, imagepack.Options{Cmd: []string{"/bin/sh"}})
		if ierr != nil {
			err = ierr
			return
		}
		archive = filepath.Join(dir, "busybox.tar")
		err = imagepack.WriteOCIArchive(archive, img, "cleanroom.test/busybox:latest")
	})
	if err != nil {
		t.Fatalf("build busybox image: %v", err)
	}
	return archive
}

var (
	goOnce    sync.Once
	goArchive string
	goErr     error
)

// GoModTools returns an OCI archive of busybox plus the host's `go` command
// (GOROOT/bin/go, go.env, VERSION): enough for `go mod download`, not for
// compiling.
func GoModTools(t testing.TB) string {
	t.Helper()
	if _, statErr := os.Stat(BusyboxPath); statErr != nil {
		testenv.Missing(t, "busybox-static ("+BusyboxPath+")")
	}
	goroot := runtimeGOROOT()
	if _, statErr := os.Stat(filepath.Join(goroot, "bin", "go")); statErr != nil {
		testenv.Missing(t, "a Go toolchain at "+goroot)
	}
	goOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cleanroom-testimage-go-")
		if err != nil {
			goErr = err
			return
		}
		root := filepath.Join(dir, "rootfs")
		if goErr = imagepack.BusyboxRootfs(root, BusyboxPath); goErr != nil {
			return
		}
		for _, f := range []string{"bin/go", "go.env", "VERSION"} {
			dst := filepath.Join(root, "usr/local/go", f)
			os.MkdirAll(filepath.Dir(dst), 0o755)
			if goErr = copyFile(filepath.Join(goroot, f), dst); goErr != nil {
				return
			}
		}
		img, err := imagepack.Image(root, imagepack.Options{
			Env: []string{"PATH=/usr/local/go/bin:/usr/sbin:/usr/bin:/sbin:/bin", "GOROOT=/usr/local/go"},
			Cmd: []string{"/bin/sh"},
		})
		if err != nil {
			goErr = err
			return
		}
		goArchive = filepath.Join(dir, "go.tar")
		goErr = imagepack.WriteOCIArchive(goArchive, img, "cleanroom.test/go:latest")
	})
	if goErr != nil {
		t.Fatalf("build go image: %v", goErr)
	}
	return goArchive
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
