package testimage

import (
	"os"
	"testing"

	"github.com/cleanroom-ci/cleanroom/internal/testenv"
)

// Debian's redis-server and redis-tools (hack/setup.sh installs them).
var redisPrograms = []string{"/usr/bin/redis-server", "/usr/bin/redis-cli"}

var redis = &cachedImage{
	name: "redis",
	// As the official image: the data directory is a declared volume
	// (the root filesystem is read-only), the cmd starts the server.
	cmd:  []string{"redis-server", "--dir", "/data"},
	vols: []string{"/data"},
	fill: func(root, _ string) error {
		libs := map[string]bool{}
		for _, p := range redisPrograms {
			// redis-server is a link to redis-check-rdb; the binary picks
			// its role from argv[0], so it is copied under its own name.
			if err := copyInto(root, p, p); err != nil {
				return err
			}
			deps, err := lddDeps(p)
			if err != nil {
				return err
			}
			for _, d := range deps {
				libs[d] = true
			}
		}
		for lib := range libs {
			if err := copyInto(root, lib, lib); err != nil {
				return err
			}
		}
		return nil
	},
}

// Redis returns an OCI archive of busybox plus Debian's redis-server and
// redis-cli with the shared libraries they load: a real server for
// service tests, and a client for the step. Its cmd starts the server
// with its data in /data, a declared volume.
func Redis(t testing.TB) string {
	t.Helper()
	for _, p := range redisPrograms {
		if _, err := os.Stat(p); err != nil {
			testenv.Missing(t, p+" (install redis-server and redis-tools)")
		}
	}
	testenv.RequireBinary(t, "ldd")
	return redis.get(t)
}
