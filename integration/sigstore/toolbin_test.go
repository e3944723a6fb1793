package sigstore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/internal/flock"
	"github.com/cleanroom-ci/cleanroom/internal/testenv"
)

// tool is a Go program the tests run as a subprocess, built once with
// `go install pkg@version` (the ordinary go client, so only the module
// proxy is involved) and cached across runs.
type tool struct {
	name    string // cache subdirectory prefix
	pkg     string // package path to install
	version string
	binary  string // name of the installed binary
}

var (
	rekorTool  = tool{"rekor-server-posix", "github.com/sigstore/rekor-tiles/v2/cmd/rekor-server/posix", "v2.3.0", "posix"}
	cosignTool = tool{"cosign", "github.com/sigstore/cosign/v2/cmd/cosign", "v2.6.5", "cosign"}
)

// toolCacheDir is $CLEANROOM_TEST_BIN, else $XDG_CACHE_HOME/cleanroom-test-bin,
// else ~/.cache/cleanroom-test-bin.
func toolCacheDir() (string, error) {
	if d := os.Getenv("CLEANROOM_TEST_BIN"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "cleanroom-test-bin"), nil
	}
	h, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(h, ".cache", "cleanroom-test-bin"), nil
}

// ensure returns the path of the tool's binary, building it if it is not
// cached. A cold cosign build takes ~8 min on 2 cores; progress is printed
// every 30 s. With CLEANROOM_NO_TOOL_BUILD=1 a missing binary is a missing
// prerequisite instead (skip locally, fail under CI=true).
func (tl tool) ensure(t *testing.T) string {
	t.Helper()
	path, err := tl.build(t)
	if err != nil {
		testenv.Missing(t, fmt.Sprintf("%s %s: %v", tl.pkg, tl.version, err))
	}
	return path
}

var errNoBuild = errors.New("not cached and CLEANROOM_NO_TOOL_BUILD=1")

func (tl tool) build(t *testing.T) (string, error) {
	cache, err := toolCacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, tl.name+"-"+tl.version)
	bin := filepath.Join(dir, tl.binary)
	if fi, err := os.Stat(bin); err == nil && fi.Mode()&0o111 != 0 {
		return bin, nil
	}
	if os.Getenv("CLEANROOM_NO_TOOL_BUILD") == "1" {
		return "", errNoBuild
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// Serialize builds across concurrent test processes (go test runs
	// packages in parallel; two runs may share the cache).
	lock, err := flock.Acquire(context.Background(), filepath.Join(dir, ".lock"), flock.Exclusive)
	if err != nil {
		return "", err
	}
	defer lock.Release()
	if _, err := os.Stat(bin); err == nil {
		return bin, nil // built by another process meanwhile
	}

	// Install into a scratch GOBIN and rename: a killed build never leaves
	// a truncated binary that later runs would trust.
	tmp, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "install", tl.pkg+"@"+tl.version)
	cmd.Dir = tmp // outside any module: pkg@version is built with its own go.mod
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOWORK=off", "GOFLAGS=-buildvcs=false")
	out, err := os.Create(filepath.Join(dir, "build.log"))
	if err != nil {
		return "", err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out

	start := time.Now()
	fmt.Fprintf(os.Stderr, "building %s@%s into %s (cold build of cosign takes ~8 min on 2 cores)\n", tl.pkg, tl.version, dir)
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				log, _ := os.ReadFile(out.Name())
				return "", fmt.Errorf("go install failed after %s: %v\n%s", time.Since(start).Round(time.Second), err, tail(log, 2000))
			}
			if err := os.Rename(filepath.Join(tmp, tl.binary), bin); err != nil {
				return "", err
			}
			fmt.Fprintf(os.Stderr, "built %s@%s in %s\n", tl.pkg, tl.version, time.Since(start).Round(time.Second))
			t.Logf("built %s in %s", tl.binary, time.Since(start).Round(time.Second))
			return bin, nil
		case <-tick.C:
			fmt.Fprintf(os.Stderr, "  still building %s (%s)\n", tl.binary, time.Since(start).Round(time.Second))
		}
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
