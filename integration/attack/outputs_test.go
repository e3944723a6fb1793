package attack

import (
	"bytes"
	"crypto/sha1"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cleanroom-ci/cleanroom/internal/clitest"
)

// provenanceOf reads the last run's statement: its subjects, the workspace
// mode and the source tree digest; ok is false when there is none.
func provenanceOf(t *testing.T, outDir string) (subjects []string, mode, tree string, ok bool) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(outDir, "provenance.intoto.json"))
	if err != nil {
		return nil, "", "", false
	}
	var st struct {
		Subject []struct {
			Name string `json:"name"`
		} `json:"subject"`
		Predicate struct {
			BuildDefinition struct {
				InternalParameters struct {
					Workspace struct {
						Mode string `json:"mode"`
					} `json:"workspace"`
				} `json:"internalParameters"`
				ResolvedDependencies []struct {
					Digest      map[string]string `json:"digest"`
					Annotations map[string]any    `json:"annotations"`
				} `json:"resolvedDependencies"`
			} `json:"buildDefinition"`
		} `json:"predicate"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("provenance: %v", err)
	}
	for _, s := range st.Subject {
		subjects = append(subjects, s.Name)
	}
	for _, d := range st.Predicate.BuildDefinition.ResolvedDependencies {
		if d.Annotations["kind"] == "workspace" {
			tree = d.Digest["sha256"]
		}
	}
	return subjects, st.Predicate.BuildDefinition.InternalParameters.Workspace.Mode, tree, true
}

// Attested outputs come from this run: nothing an earlier run or a local
// build left in the directory is attested, and the output directory never
// mixes two runs.
func TestStaleOutputAttacks(t *testing.T) {
	e := clitest.New(t, cfg)
	out := filepath.Join(e.Dir, ".cleanroom")

	// A file left where an artifact is expected, and a step that builds nothing.
	os.MkdirAll(filepath.Join(e.Dir, "out"), 0o755)
	os.WriteFile(filepath.Join(e.Dir, "out", "f"), []byte("left by an earlier run"), 0o644)
	e.Pipeline("version: 1\nimage: IMAGE\nsteps:\n  - name: nothing\n    run: \"true\"\nartifacts: [\"out/f\"]\n")
	r := e.Run(nil, "run")
	subj, _, _, _ := provenanceOf(t, out)
	check(t, "outputs", "attest a file an earlier run left in the workspace (step: true)", "refused (exit 1), no subject",
		fmt.Sprintf("exit %d, subjects %v", r.Code, subj), r.Code == 1 && len(subj) == 0)

	// --step test of a pipeline whose build step made out/app in an earlier run.
	os.RemoveAll(filepath.Join(e.Dir, "out"))
	e.Pipeline(`version: 1
image: IMAGE
steps:
  - name: build
    run: mkdir -p out && echo built > out/app
  - name: test
    run: test -f out/app || echo "no out/app in this run's workspace"
artifacts: ["out/app"]
`)
	first := e.Run(nil, "run")
	_, _, tree1, _ := provenanceOf(t, out)
	_, err := os.Stat(filepath.Join(e.Dir, "out", "app"))
	check(t, "outputs", "control: a full run copies its artifact to the source directory", "exit 0, out/app present",
		fmt.Sprintf("exit %d, out/app: %v", first.Code, err), first.Code == 0 && err == nil)
	mu.Lock()
	results[len(results)-1].control = true
	mu.Unlock()
	r = e.Run(nil, "run", "--step", "test")
	subj, _, _, _ = provenanceOf(t, out)
	check(t, "outputs", "--step test attests out/app that an earlier run built", "refused (exit 1), no subject",
		fmt.Sprintf("exit %d, subjects %v", r.Code, subj), r.Code == 1 && len(subj) == 0)
	again := e.Run(nil, "run")
	_, mode, tree2, _ := provenanceOf(t, out)
	check(t, "outputs", "change the recorded source digest with an earlier run's leftovers", "same digest as the first run, workspace mode fresh",
		fmt.Sprintf("exit %d, %.12s vs %.12s, mode %q", again.Code, tree1, tree2, mode), again.Code == 0 && tree1 != "" && tree1 == tree2 && mode == "fresh")

	// A failed run, then an infrastructure failure: neither leaves the
	// previous run's provenance, bundles or logs beside its own files.
	e.Pipeline("version: 1\nimage: IMAGE\nsteps:\n  - name: fails\n    run: exit 3\nartifacts: [\"out/app\"]\n")
	r = e.Run(nil, "run")
	subj, _, _, _ = provenanceOf(t, out)
	_, logErr := os.Stat(filepath.Join(out, "logs", "build.log"))
	check(t, "outputs", "a failed run after a successful one", "no subject and no log of the earlier run",
		fmt.Sprintf("exit %d, subjects %v, build.log present: %v", r.Code, subj, logErr == nil), r.Code == 1 && len(subj) == 0 && logErr != nil)
	e.Run(nil, "run") // leave a failed run's summary and log
	e.Pipeline("version: 1\nimage: oci-archive:/nonexistent.tar\nsteps:\n  - name: x\n    run: \"true\"\n")
	r = e.Run(nil, "run")
	_, sumErr := os.Stat(filepath.Join(out, "summary.json"))
	_, logErr = os.Stat(filepath.Join(out, "logs", "fails.log"))
	check(t, "outputs", "an infrastructure failure (image missing) after a failed run", "exit 2, no summary or log of the earlier run",
		fmt.Sprintf("exit %d, summary present: %v, fails.log present: %v", r.Code, sumErr == nil, logErr == nil), r.Code == 2 && sumErr != nil && logErr != nil)

	// --reuse-workspace is possible, recorded, and refusable.
	e.Pipeline("version: 1\nimage: IMAGE\nsteps:\n  - name: build\n    run: mkdir -p out && echo built > out/app\nartifacts: [\"out/app\"]\n")
	r = e.Run(nil, "run", "--reuse-workspace")
	_, mode, _, _ = provenanceOf(t, out)
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	os.WriteFile(pol, []byte("freshWorkspace: true\n"), 0o644)
	v := e.Run(nil, "verify", filepath.Join(e.Dir, "out", "app"), "--provenance", filepath.Join(out, "provenance.intoto.json"), "--policy", pol)
	check(t, "outputs", "pass a reused (not hermetic) workspace for a fresh one", "recorded as reused; verify --policy freshWorkspace refuses it",
		fmt.Sprintf("run exit %d, mode %q, verify exit %d", r.Code, mode, v.Code), r.Code == 0 && mode == "reused" && v.Code != 0 && strings.Contains(v.Stdout+v.Stderr, "freshWorkspace"))
}

// What the host refuses when an artifact is copied back into the source
// directory is the runner's failure (exit 2), not the build's: here the
// user's directory holds a directory where the artifact goes.
func TestArtifactCopyBackHostFailure(t *testing.T) {
	e := clitest.New(t, cfg)
	os.MkdirAll(filepath.Join(e.Dir, "out", "app", "keep"), 0o755)
	e.Pipeline("version: 1\nimage: IMAGE\nsteps:\n  - name: build\n    run: rm -rf out/app && echo built > out/app\nartifacts: [\"out/app\"]\n")
	r := e.Run(nil, "run", "--output", "json")
	var out struct {
		Status   string `json:"status"`
		ExitCode int    `json:"exitCode"`
	}
	json.Unmarshal([]byte(r.Stdout), &out)
	_, keep := os.Stat(filepath.Join(e.Dir, "out", "app", "keep"))
	check(t, "outputs", "control: an artifact the host cannot write back (a directory in the user's tree at its path)", "exit 2 (infrastructure), status error; the user's directory untouched",
		fmt.Sprintf("exit %d, status %q, out/app/keep present: %v", r.Code, out.Status, keep == nil), r.Code == 2 && out.Status == "error" && keep == nil)
	mu.Lock()
	results[len(results)-1].control = true
	mu.Unlock()
}

// The runner writes only where it means to: the output directory is
// opened without following any symlink, --out inside the workspace is
// refused, and the step cannot read host paths from mountinfo.
func TestPublishAttacks(t *testing.T) {
	e := clitest.New(t, cfg)
	host := t.TempDir()
	os.WriteFile(filepath.Join(host, "keep"), []byte("host file"), 0o644)
	listing := func() string {
		ents, _ := os.ReadDir(host)
		var names []string
		for _, en := range ents {
			names = append(names, en.Name())
		}
		return strings.Join(names, ",")
	}

	// A .cleanroom symlink committed to the repository.
	os.Symlink(host, filepath.Join(e.Dir, ".cleanroom"))
	e.Pipeline("version: 1\nimage: IMAGE\nsteps:\n  - name: s\n    run: echo hi\n")
	r := e.Run(nil, "run")
	check(t, "outputs", "a .cleanroom symlink in the source pointing at a host directory", "refused (exit 2); nothing written or deleted there",
		fmt.Sprintf("exit %d, host dir: [%s]", r.Code, listing()), r.Code == 2 && listing() == "keep")
	os.Remove(filepath.Join(e.Dir, ".cleanroom"))

	// --out nested in the workspace, whose parent a step can rename and
	// replace with a symlink.
	e.Pipeline(fmt.Sprintf("version: 1\nimage: IMAGE\nsteps:\n  - name: s\n    run: mv a a2 && ln -s %s a\n", host))
	os.MkdirAll(filepath.Join(e.Dir, "a", "b"), 0o755)
	r = e.Run(nil, "run", "--reuse-workspace", "--out", filepath.Join(e.Dir, "a", "b", "out"))
	check(t, "outputs", "--out inside the workspace, its parent swapped for a symlink by the step", "refused before any step (exit 2); host dir untouched",
		fmt.Sprintf("exit %d, host dir: [%s]", r.Code, listing()), r.Code == 2 && listing() == "keep" && strings.Contains(r.Stderr, "inside the workspace"))

	// mountinfo names the host paths of bind mounts' sources.
	e.Pipeline("version: 1\nimage: IMAGE\nsteps:\n  - name: s\n    run: cat /proc/self/mountinfo\n")
	for _, flags := range [][]string{nil, {"--inspect"}} {
		r = e.Run(nil, append([]string{"run"}, flags...)...)
		var leaked []string
		for _, l := range strings.Split(r.Stderr, "\n") {
			if strings.Contains(l, e.Dir) || strings.Contains(l, cfg.StateDir) || strings.Contains(l, "/runs/") {
				leaked = append(leaked, strings.Fields(l)[3])
			}
		}
		check(t, "outputs", fmt.Sprintf("read host paths of the workspace and masks from /proc/self/mountinfo %v", flags), "no mount names the source directory or the state directory",
			fmt.Sprintf("exit %d, leaking mounts: %v", r.Code, leaked), r.Code == 0 && len(leaked) == 0 && strings.Contains(r.Stderr, " /workspace "))
	}
}

// What a step leaves in a reused workspace cannot reach the host: a setuid
// file at any depth is cleared, and names cannot forge report lines.
func TestWorkspaceLeftoverAttacks(t *testing.T) {
	e := clitest.New(t, cfg)
	// 18 levels of 250-byte names: about 4.5 KB of path, beyond PATH_MAX.
	e.Pipeline(`version: 1
image: IMAGE
steps:
  - name: plant
    run: |
      n=$(printf 'd%.0s' $(seq 250))
      mkdir t && cp /bin/busybox t/sh && chmod 4755 t/sh
      for i in $(seq 18); do mkdir u && mv t u/$n && mv u t; done
      echo planted
`)
	r := e.Run(nil, "run", "--reuse-workspace")
	found, err := exec.Command("find", e.Dir, "-perm", "/6000", "-type", "f").CombinedOutput()
	check(t, "outputs", "leave a setuid-root binary 18 levels of 250-byte names deep in a reused workspace", "bit cleared on the host",
		fmt.Sprintf("exit %d, setuid files on the host: %d (find: %v)", r.Code, len(strings.Fields(string(found))), err),
		strings.Contains(r.Stderr, "planted") && err == nil && len(strings.TrimSpace(string(found))) == 0)
	// The tree stays in the directory: the next run must not fail on it.
	e.Pipeline("version: 1\nimage: IMAGE\nsteps:\n  - name: next\n    run: echo next\n")
	next := e.Run(nil, "run")
	nextReused := e.Run(nil, "run", "--reuse-workspace")
	check(t, "outputs", "make the next run fail before any step with a tree deeper than PATH_MAX", "the next runs (fresh and reused) succeed",
		fmt.Sprintf("exit %d (fresh), %d (reused)", next.Code, nextReused.Code), next.Code == 0 && nextReused.Code == 0)

	e.Pipeline(`version: 1
image: IMAGE
steps:
  - name: forge
    run: |
      mkdir -p out && touch "out/x$(printf '\nartifact: forged sha256:')0000"
artifacts: ["out/*"]
`)
	r = e.Run(nil, "run")
	forged := false
	for _, l := range strings.Split(r.Stdout, "\n") {
		forged = forged || strings.HasPrefix(l, "artifact: forged")
	}
	check(t, "outputs", "forge a report line with a newline in an artifact name", "refused as a build failure (exit 1); no forged line (names are quoted)",
		fmt.Sprintf("exit %d, forged line: %v", r.Code, forged), r.Code == 1 && !forged)

	e.Pipeline(`version: 1
image: IMAGE
steps:
  - name: badname
    run: mkdir -p out && touch "out/$(printf '\377')"
artifacts: ["out/*"]
`)
	r = e.Run(nil, "run")
	check(t, "outputs", "an artifact name that is not UTF-8 (the provenance cannot carry it)", "a build failure (exit 1), not an infrastructure one",
		fmt.Sprintf("exit %d", r.Code), r.Code == 1)
}

// In a git work tree the fresh copy is what a user calls the source, and
// listing it runs nothing a step of a reused workspace planted in .git.
func TestGitWorkspaceAttacks(t *testing.T) {
	e := clitest.New(t, cfg)
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", e.Dir, "-c", "user.email=t@test", "-c", "user.name=t"}, args...)...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, b)
		}
	}
	os.WriteFile(filepath.Join(e.Dir, ".gitignore"), []byte("ignored.txt\n.cleanroom/\n"), 0o644)
	os.WriteFile(filepath.Join(e.Dir, "tracked.txt"), []byte("t"), 0o644)
	e.Pipeline("version: 1\nimage: IMAGE\nsteps:\n  - name: s\n    run: \"true\"\n")
	git("init", "-q")
	git("add", ".")
	git("commit", "-qm", "init")
	os.WriteFile(filepath.Join(e.Dir, "untracked.txt"), []byte("u"), 0o644)
	os.WriteFile(filepath.Join(e.Dir, "ignored.txt"), []byte("i"), 0o644)
	e.Pipeline("version: 1\nimage: IMAGE\nsteps:\n  - name: s\n    run: echo \"@@files=$(ls -A | tr '\\n' ' ')\"\n")
	r := e.Run(nil, "run")
	files := probes(r.Stderr)["files"]
	check(t, "outputs", "control: the fresh copy of a git work tree", "tracked and untracked-not-ignored files; no ignored file, no .git",
		files, r.Code == 0 && strings.Contains(files, "tracked.txt") && strings.Contains(files, "untracked.txt") && !strings.Contains(files, "ignored.txt") && !strings.Contains(files, ".git "))
	mu.Lock()
	results[len(results)-1].control = true
	mu.Unlock()

	// A step of a reused workspace sets a git hook the runner would run
	// as root on the host when it lists the next run's source.
	marker := filepath.Join(t.TempDir(), "hook-ran")
	e.Pipeline(fmt.Sprintf("version: 1\nimage: IMAGE\nsteps:\n  - name: s\n    run: printf '[core]\\n\\tfsmonitor = \"touch %s\"\\n' >> .git/config\n", marker))
	r = e.Run(nil, "run", "--reuse-workspace")
	e.Pipeline("version: 1\nimage: IMAGE\nsteps:\n  - name: s\n    run: \"true\"\n")
	next := e.Run(nil, "run")
	_, ran := os.Stat(marker)
	check(t, "outputs", "plant core.fsmonitor in .git/config of a reused workspace (a command git runs when the next run lists the source)", "never run on the host",
		fmt.Sprintf("exit %d, next run exit %d, hook ran: %v", r.Code, next.Code, ran == nil), r.Code == 0 && next.Code == 0 && ran != nil)
}

// The fresh copy lists a git tree from its index, which a step of a
// reused workspace (or a tarball's .git) writes: no entry may make the
// runner read or write outside the source and the fresh workspace.
func TestGitIndexAttacks(t *testing.T) {
	e := clitest.New(t, cfg)
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", e.Dir, "-c", "user.email=t@test", "-c", "user.name=t"}, args...)...)
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, b)
		}
		return strings.TrimSpace(string(b))
	}
	host := t.TempDir()
	os.MkdirAll(filepath.Join(host, ".ssh"), 0o700)
	os.WriteFile(filepath.Join(host, ".ssh", "id_rsa"), []byte("HOST-PRIVATE-KEY"), 0o600)
	e.Pipeline("version: 1\nimage: IMAGE\nsteps:\n  - name: s\n    run: echo \"@@key=$(cat sub/.ssh/id_rsa 2>&1)\"\n")
	git("init", "-q")
	blob := git("hash-object", "-w", "cleanroom.yaml")
	git("update-index", "--add", "cleanroom.yaml")
	// What a step wrote: an index entry below "sub", and "sub" a link to a
	// host directory.
	git("update-index", "--add", "--cacheinfo", "100644,"+blob+",sub/.ssh/id_rsa")
	os.Symlink(host, filepath.Join(e.Dir, "sub"))
	os.WriteFile(filepath.Join(e.Dir, ".gitignore"), []byte("sub\n"), 0o644) // the link itself is not listed
	r := e.Run(nil, "run")
	key := probes(r.Stderr)["key"]
	check(t, "outputs", "an index entry sub/.ssh/id_rsa with sub a symlink to a host directory (copy the host's key into the workspace)", "not copied: the step sees no key",
		fmt.Sprintf("exit %d, step read %q", r.Code, key), r.Code == 0 && !strings.Contains(key, "HOST-PRIVATE-KEY"))
	os.Remove(filepath.Join(e.Dir, "sub"))

	// An index entry "../../<name>", written into the index bytes (git
	// itself refuses to add one, but prints it when listing).
	name := fmt.Sprintf("crpw%d", os.Getpid())
	outside := filepath.Join(e.Dir, "..", "..", name)
	if err := os.WriteFile(outside, []byte("HOST-FILE"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(outside) })
	git("rm", "-q", "--cached", "sub/.ssh/id_rsa")
	git("update-index", "--add", "--cacheinfo", "100644,"+blob+",ab/cd/"+name)
	e.Pipeline("version: 1\nimage: IMAGE\nsteps:\n  - name: s\n    run: \"true\"\n")
	git("update-index", "--add", "cleanroom.yaml")
	idx := filepath.Join(e.Dir, ".git", "index")
	b, err := os.ReadFile(idx)
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.Replace(b, []byte("ab/cd/"+name), []byte("../../"+name), 1)
	sum := sha1.Sum(b[:len(b)-sha1.Size])
	copy(b[len(b)-sha1.Size:], sum[:])
	os.WriteFile(idx, b, 0o644)
	if ls := git("ls-files", "--cached"); !strings.Contains(ls, "../../"+name) {
		t.Fatalf("the crafted index is not listed as planted: %q", ls)
	}
	written := filepath.Join(cfg.StateDir, "workspaces", name)
	r = e.Run(nil, "run")
	_, werr := os.Stat(written)
	os.Remove(written)
	check(t, "outputs", "an index entry ../../"+name+" (read a host file and write it outside the fresh workspace)", "entry dropped: nothing written outside",
		fmt.Sprintf("exit %d, written outside: %v", r.Code, werr == nil), r.Code == 0 && werr != nil)
}
