// Package testimage builds the tests' step image from Debian's
// busybox-static, so no test needs a registry.
package testimage

import (
	"os"
	"path/filepath"
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
