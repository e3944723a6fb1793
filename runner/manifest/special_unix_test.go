//go:build unix

package manifest

import (
	"context"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A FIFO is listed by mode, never opened: opening it would block until a
// writer appeared. As an artifact it is refused.
func TestFIFO(t *testing.T) {
	ws, _ := workspace(t)
	write(t, filepath.Join(ws, "f"), "x", 0o644)
	if err := syscall.Mkfifo(filepath.Join(ws, "pipe"), 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	_, n, err := TreeDigest(context.Background(), ws, 0)
	if err != nil || n != 2 {
		t.Fatalf("TreeDigest = %d entries, %v", n, err)
	}
	if _, err := MatchArtifacts(ws, []string{"*"}); err == nil || !strings.Contains(err.Error(), "pipe is not a regular file") {
		t.Errorf("MatchArtifacts err = %v", err)
	}
}
