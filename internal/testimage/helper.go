package testimage

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cleanroom-ci/cleanroom/internal/testenv"
)

// Host programs the GitLab helper test image is made of: bash (GitLab's
// stage scripts), git and its HTTP transport (get_sources clones through
// the egress proxy).
var helperPrograms = []string{"/usr/bin/bash", "/usr/bin/git", "/usr/lib/git-core/git", "/usr/lib/git-core/git-remote-http"}

var helper = &cachedImage{
	name: "helper",
	cmd:  []string{"/bin/bash"},
	fill: func(root, _ string) error { return buildHelperRootfs(root) },
}

// Helper returns an OCI archive of a GitLab helper image for tests:
// busybox plus the host's bash and git (with git-remote-http) and the
// shared libraries ldd says they need, so get_sources can really clone
// over HTTP. It is built once per test binary. git and bash must be
// installed on the host (hack/setup.sh installs git).
func Helper(t testing.TB) string {
	t.Helper()
	for _, p := range helperPrograms {
		if _, statErr := os.Stat(p); statErr != nil {
			testenv.Missing(t, p+" (install git and bash)")
		}
	}
	testenv.RequireBinary(t, "ldd")
	return helper.get(t)
}

func buildHelperRootfs(root string) error {
	libs := map[string]bool{}
	for _, p := range helperPrograms {
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
	// bash where scripts look for it, over busybox's symlinks.
	for _, alias := range []string{"/bin/bash"} {
		if err := copyInto(root, "/usr/bin/bash", alias); err != nil {
			return err
		}
	}
	// git runs its builtins as "git-<cmd>" from its exec path, and the
	// https transport is the http one under another name.
	core := filepath.Join(root, "usr/lib/git-core")
	ents, err := os.ReadDir("/usr/lib/git-core")
	if err != nil {
		return err
	}
	for _, e := range ents {
		src := filepath.Join("/usr/lib/git-core", e.Name())
		if target, err := os.Readlink(src); err == nil && !strings.Contains(target, "/") {
			if _, err := os.Lstat(filepath.Join(core, e.Name())); err == nil {
				continue
			}
			if err := os.Symlink(target, filepath.Join(core, e.Name())); err != nil {
				return err
			}
		}
	}
	// An empty template dir keeps `git init` from warning.
	if err := os.MkdirAll(filepath.Join(root, "usr/share/git-core/templates"), 0o755); err != nil {
		return err
	}
	for lib := range libs {
		if err := copyInto(root, lib, lib); err != nil {
			return err
		}
	}
	return nil
}

// lddDeps lists the shared objects (with the dynamic loader) a program
// loads, by absolute path.
func lddDeps(prog string) ([]string, error) {
	out, err := exec.Command("ldd", prog).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", prog, err)
	}
	var deps []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			deps = append(deps, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			deps = append(deps, f[0])
		}
	}
	return deps, sc.Err()
}

// copyInto copies the host file src (following symlinks) to dst inside
// root, replacing whatever is there (busybox applet links included).
func copyInto(root, src, dst string) error {
	target := filepath.Join(root, dst)
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	os.Remove(target)
	return copyFile(src, target)
}
