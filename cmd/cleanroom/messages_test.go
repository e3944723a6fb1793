package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNeedsRoot(t *testing.T) {
	perm := fmt.Errorf("store: %w", &os.PathError{Op: "mkdir", Path: "/var/lib/cleanroom/cache", Err: os.ErrPermission})
	defer func(f func() int) { geteuid = f }(geteuid)
	geteuid = func() int { return 1000 }
	if got := needsRoot("export-materials", perm); got.Error() != "export-materials needs root (run it with sudo): store: mkdir /var/lib/cleanroom/cache: permission denied" {
		t.Errorf("non-root: %v", got)
	}
	other := errors.New("manifest: open x.json: no such file or directory")
	if got := needsRoot("export-materials", other); got != other {
		t.Errorf("not a permission error: %v", got)
	}
	geteuid = func() int { return 0 }
	if got := needsRoot("image ls", perm); got != perm {
		t.Errorf("root: %v", got)
	}
}

func TestMessages(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	pipelineFile := filepath.Join(dir, "cleanroom.yaml")
	os.WriteFile(pipelineFile, []byte("version: 1\nimage: oci-archive:./nope.tar\nsteps:\n  - name: a\n    run: \"true\"\n    timeout: 1m\n"), 0o644)
	os.Mkdir(filepath.Join(dir, "rootfs"), 0o755)
	os.WriteFile(filepath.Join(dir, "rootfs", "f"), []byte("x"), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		// A missing archive is named once, at its line, as written and resolved.
		{[]string{"run", "-f", pipelineFile},
			"cleanroom: " + pipelineFile + ":2:8: image: archive ./nope.tar does not exist (" + filepath.Join(dir, "nope.tar") + ")\n"},
		{[]string{"lint", "-f", pipelineFile},
			"cleanroom: " + pipelineFile + ":2:8: image: archive ./nope.tar does not exist (" + filepath.Join(dir, "nope.tar") + ")\n"},
		{[]string{"export-materials", pipelineFile, "out"},
			"cleanroom: export-materials " + pipelineFile + ": not a provenance file: export-materials expects a provenance file (provenance.intoto.json, which a run writes to its --out directory)\n"},
		{[]string{"image", "pack", "rootfs", "-o", "missing-dir/x.tar"},
			"cleanroom: -o missing-dir/x.tar: directory missing-dir does not exist (create it first)\n"},
		{[]string{"image", "import", "nope.tar"},
			"cleanroom: image import nope.tar: no such file; a registry image is pulled only when written with its registry host, e.g. docker.io/library/busybox:1.36 or 127.0.0.1:5000/builder:1\n"},
	} {
		code, _, errs := cli(t, tc.args...)
		if code != 2 || errs != tc.want {
			t.Errorf("%v: exit %d, stderr\n%q\nwant\n%q", tc.args, code, errs, tc.want)
		}
	}
	// --replay with a pipeline file: the archive exists now, so the replay
	// file is what is checked.
	os.WriteFile(filepath.Join(dir, "nope.tar"), []byte("x"), 0o644)
	code, _, errs := cli(t, "run", "-f", pipelineFile, "--replay", pipelineFile, "--cache", filepath.Join(dir, "cache"))
	want := "cleanroom: --replay " + pipelineFile + ": not a provenance file: --replay expects a provenance file (provenance.intoto.json, which a run writes to its --out directory)\n"
	if code != 2 || !strings.HasSuffix(errs, want) {
		t.Errorf("--replay: exit %d, stderr\n%q\nwant suffix\n%q", code, errs, want)
	}
}

func TestPlural(t *testing.T) {
	for n, want := range map[int]string{0: "0 bodies", 1: "1 body", 2: "2 bodies"} {
		if got := plural(n, "body", "bodies"); got != want {
			t.Errorf("plural(%d) = %q", n, got)
		}
	}
}

func TestHelpTexts(t *testing.T) {
	_, out, _ := cli(t, "verify", "--help")
	if !strings.Contains(out, "Usage:\n  cleanroom verify ARTIFACT... [flags]\n") {
		t.Errorf("verify usage line:\n%s", out)
	}
	// The prose wraps: every line of the description fits a terminal (the
	// policy example and the command examples are code, kept whole).
	desc, _, _ := strings.Cut(out, "A policy file")
	for _, l := range strings.Split(desc, "\n") {
		if len(l) > 80 {
			t.Errorf("verify --help line of %d characters: %q", len(l), l)
		}
	}
	_, out, _ = cli(t, "run", "--help")
	if !strings.Contains(out, `--goproxy-upstream URL `) || !strings.Contains(out, `(default: the first proxy in "go env GOPROXY")`) {
		t.Errorf("--goproxy-upstream help:\n%s", out)
	}
}
