package services

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Sandbox ids fit containerd's limit and stay distinct, however long the
// step name and alias are.
func TestIDsFitContainerd(t *testing.T) {
	long := "cr-0123456789ab-3-" + strings.Repeat("s", 63)
	g := &Group{cfg: Config{IDPrefix: long}}
	a := Service{Alias: strings.Repeat("a", 63)}
	idA := g.id(a, "")
	g.svcs = append(g.svcs, &running{svc: a})
	b := Service{Alias: strings.Repeat("a", 62) + "b"}
	idB := g.id(b, "")
	probe := g.id(a, "-ready12")
	for _, id := range []string{idA, idB, probe} {
		if len(id) > maxIDLength || !strings.HasPrefix(id, "cr-0123456789ab-3-") {
			t.Errorf("id %q (%d characters)", id, len(id))
		}
	}
	if idA == idB || idA == probe {
		t.Errorf("ids collide: %q %q %q", idA, idB, probe)
	}
	short := &Group{cfg: Config{IDPrefix: "cr-0123456789ab-0-test"}}
	if id := short.id(Service{Alias: "cache"}, ""); id != "cr-0123456789ab-0-test-svc-cache" {
		t.Errorf("short id %q", id)
	}
}

func TestNotReadyErrorShowsTheLogTail(t *testing.T) {
	dir := t.TempDir()
	var lines []string
	for i := range 30 {
		lines = append(lines, fmt.Sprintf("line %d", i))
	}
	os.WriteFile(filepath.Join(dir, "db.log"), []byte(strings.Join(lines, "\n")+"\n"), 0o600)
	err := &NotReadyError{Step: "test", Alias: "db", Reason: "it exited (exit status 1)", LogName: "logs/services/test/db.log", LogTail: tail(filepath.Join(dir, "db.log"), 20)}
	msg := err.Error()
	if !strings.HasPrefix(msg, `step "test": service "db" is not ready: it exited (exit status 1); last lines of its log (logs/services/test/db.log):`) {
		t.Errorf("message %q", msg)
	}
	if strings.Count(msg, "\n    line") != 20 || !strings.Contains(msg, "\n    line 10\n") || strings.Contains(msg, "line 9\n") || !strings.HasSuffix(msg, "line 29") {
		t.Errorf("tail is not the last 20 lines:\n%s", msg)
	}
	empty := &NotReadyError{Step: "s", Alias: "x", Reason: "r", LogName: "l"}
	if !strings.HasSuffix(empty.Error(), "its log (l) is empty") {
		t.Errorf("empty log: %q", empty.Error())
	}
}
