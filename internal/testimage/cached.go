package testimage

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cleanroom-ci/cleanroom/internal/testenv"
	"github.com/cleanroom-ci/cleanroom/sandbox/imagepack"
)

// cachedImage is a test image built at most once per test binary: a
// busybox root filesystem, extended by fill, packed as an OCI archive.
type cachedImage struct {
	name string   // short name: temp dir prefix, archive and ref name
	env  []string // image config env; nil for the default PATH
	cmd  []string // image config cmd
	vols []string // image config volumes
	fill func(root, scratch string) error

	once sync.Once
	path string
	err  error
}

// get returns the archive's path, building it on first use.
func (c *cachedImage) get(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(BusyboxPath); err != nil {
		testenv.Missing(t, "busybox-static ("+BusyboxPath+")")
	}
	c.once.Do(func() { c.path, c.err = c.build() })
	if c.err != nil {
		t.Fatalf("build %s image: %v", c.name, c.err)
	}
	return c.path
}

func (c *cachedImage) build() (string, error) {
	dir, err := os.MkdirTemp("", "cleanroom-testimage-"+c.name+"-")
	if err != nil {
		return "", err
	}
	root := filepath.Join(dir, "rootfs")
	if err := imagepack.BusyboxRootfs(root, BusyboxPath); err != nil {
		return "", err
	}
	if c.fill != nil {
		scratch := filepath.Join(dir, "scratch")
		if err := os.MkdirAll(scratch, 0o755); err != nil {
			return "", err
		}
		if err := c.fill(root, scratch); err != nil {
			return "", err
		}
	}
	cmd := c.cmd
	if cmd == nil {
		cmd = []string{"/bin/sh"}
	}
	img, err := imagepack.Image(root, imagepack.Options{Env: c.env, Cmd: cmd, Volumes: c.vols})
	if err != nil {
		return "", err
	}
	archive := filepath.Join(dir, c.name+".tar")
	return archive, imagepack.WriteOCIArchive(archive, img, "cleanroom.test/"+c.name+":latest")
}
