package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyInWorkspace(t *testing.T) {
	ws := t.TempDir()
	outside := t.TempDir()
	os.MkdirAll(filepath.Join(ws, "keys"), 0o755)
	os.WriteFile(filepath.Join(ws, "keys", "cosign.key"), []byte("k"), 0o600)
	os.WriteFile(filepath.Join(outside, "cosign.key"), []byte("k"), 0o600)
	// A link from outside into the workspace is still inside.
	os.Symlink(filepath.Join(ws, "keys", "cosign.key"), filepath.Join(outside, "link.key"))
	// A sibling whose name starts like the workspace is not inside.
	sibling := ws + "-keys"
	os.MkdirAll(sibling, 0o755)
	t.Cleanup(func() { os.RemoveAll(sibling) })
	os.WriteFile(filepath.Join(sibling, "cosign.key"), []byte("k"), 0o600)

	in := filepath.Join(ws, "keys", "cosign.key")
	if got, want := keyInWorkspace(in, ws), "--sign-key "+in+" lies inside the workspace "+ws+", which every step can read: a step could copy the key out; keep the key outside the workspace"; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if keyInWorkspace(filepath.Join(outside, "link.key"), ws) == "" {
		t.Error("a symlink into the workspace was not caught")
	}
	for _, k := range []string{"", filepath.Join(outside, "cosign.key"), filepath.Join(sibling, "cosign.key")} {
		if got := keyInWorkspace(k, ws); got != "" {
			t.Errorf("%q: %s", k, got)
		}
	}
}

// --strict refuses a key inside the workspace; without it the run warns.
func TestRunKeyInWorkspace(t *testing.T) {
	ws := t.TempDir()
	p := filepath.Join(ws, "cleanroom.yaml")
	os.WriteFile(p, []byte("version: 1\nimage: registry.example.org/b@sha256:"+strings.Repeat("0", 64)+"\nsteps:\n  - name: a\n    timeout: 1m\n    run: make\n"), 0o644)
	key := filepath.Join(ws, "cosign.key")
	os.WriteFile(key, []byte("not a key"), 0o600)
	msg := "--sign-key " + key + " lies inside the workspace " + ws + ", which every step can read: a step could copy the key out; keep the key outside the workspace"

	code, _, errs := cli(t, "run", "-f", p, "--sign-key", key, "--strict")
	if code != 2 || errs != "cleanroom: "+msg+" (refused with --strict)\n" {
		t.Errorf("--strict: exit %d, stderr %q", code, errs)
	}
	code, _, errs = cli(t, "run", "-f", p, "--sign-key", key)
	if code != 2 || !strings.Contains(errs, "[WARN]  cleanroom: "+msg+"\n") || !strings.Contains(errs, "cleanroom: --sign-key: ") {
		t.Errorf("without --strict: exit %d, stderr %q", code, errs)
	}
}
