package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cleanroom-ci/cleanroom/runner/vary"
)

// rebuildReport is the part of report.json the tests read.
type rebuildReport struct {
	Reproduced bool `json:"reproduced"`
	Reference  string
	Builds     []struct {
		Name        string   `json:"name"`
		Dir         string   `json:"dir"`
		Varied      []string `json:"varied"`
		Reproduced  bool     `json:"reproduced"`
		Failed      string   `json:"failedStep"`
		Differences []struct {
			Name string `json:"name"`
		} `json:"differences"`
		Divergence *struct {
			Step   string `json:"step"`
			Reason string `json:"reason"`
		} `json:"firstDifferingStep"`
	} `json:"builds"`
	Causes []struct {
		Variation string   `json:"variation"`
		Artifacts []string `json:"artifacts"`
		Reason    string   `json:"reason"`
	} `json:"causes"`
	NotVaried  map[string]string `json:"notVaried"`
	Diffoscope []struct {
		Artifact string `json:"artifact"`
		Report   string `json:"report"`
		Error    string `json:"error"`
	} `json:"diffoscope"`
	DiffoscopeNote string `json:"diffoscopeNote"`
}

func readRebuildReport(t *testing.T, dir string) rebuildReport {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep rebuildReport
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatalf("report.json: %v\n%s", err, data)
	}
	return rep
}

// gitCommit makes dir a git work tree with one commit at a fixed time.
func gitCommit(t *testing.T, dir, when string) {
	t.Helper()
	for _, args := range [][]string{
		{"init", "-q"}, {"add", "-A"},
		{"-c", "user.name=t", "-c", "user.email=t@example.test", "commit", "-q", "-m", "source"},
	} {
		cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_COMMITTER_DATE="+when, "GIT_AUTHOR_DATE="+when)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
}

// One artifact per variation, each depending on exactly what that
// variation changes and on nothing else: the whole pipeline repeats itself
// when nothing is varied.
const variedPipeline = `version: 1
image: IMAGE
steps:
  - name: probe
    run: |
      mkdir -p out
      echo "$SOURCE_DATE_EPOCH" > out/source-date-epoch
      pwd > out/workspace-path
      id -u > out/uid
      umask > out/umask
      date -d @0 +%H > out/timezone
      echo "$LANG $LC_ALL" > out/locale
      hostname > out/hostname
      nproc > out/cpus
      find src -type f > out/file-order
      # the shell hands its children its own order: the step's first
      # process's environment block is what the runner ordered
      tr '\0' '\n' < /proc/1/environ | grep -n '^CI=' | cut -d: -f1 > out/env-order
artifacts: ["out/*"]
`

// Every variation is caught on its own, and the report names it as the
// cause, with the artifact that embeds it; SOURCE_DATE_EPOCH comes from the
// commit time; the builds' outputs are kept side by side.
func TestRebuildNamesEachVariationAsTheCause(t *testing.T) {
	e := newEnv(t)
	e.pipeline(variedPipeline)
	for _, n := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"} {
		os.MkdirAll(filepath.Join(e.dir, "src"), 0o755)
		os.WriteFile(filepath.Join(e.dir, "src", n+".txt"), []byte(n), 0o644)
	}
	gitCommit(t, e.dir, "2026-01-02T03:04:05Z")
	r := e.run(nil, "rebuild", "--diffoscope", "-")
	if r.code != 1 {
		t.Fatalf("want exit 1 for a build that is not reproducible: %s", r)
	}
	out := filepath.Join(e.dir, ".cleanroom", "rebuild")
	rep := readRebuildReport(t, out)
	if rep.Reproduced || len(rep.Builds) < 2 || rep.Builds[0].Name != "build-1" || rep.Builds[0].Reproduced {
		t.Fatalf("report: %+v", rep)
	}
	// The reference embeds the commit time.
	sde, err := os.ReadFile(filepath.Join(out, "build-0", "artifacts", "out", "source-date-epoch"))
	if err != nil || strings.TrimSpace(string(sde)) != "1767323045" {
		t.Fatalf("SOURCE_DATE_EPOCH of the reference: %q, %v", sde, err)
	}
	if d := rep.Builds[0].Divergence; d == nil || d.Step != "probe" {
		t.Fatalf("first differing step not named: %+v", rep.Builds[0])
	}
	causes := map[string][]string{}
	for _, c := range rep.Causes {
		causes[c.Variation] = c.Artifacts
	}
	for _, v := range vary.All {
		if v == vary.CPUs && rep.NotVaried[v] != "" {
			continue // a one-CPU host
		}
		if !slices.Contains(causes[v], "out/"+v) {
			t.Errorf("variation %s not named as the cause of out/%s: causes %v", v, v, causes)
		}
		if len(causes[v]) != 1 {
			t.Errorf("variation %s blamed for more than its artifact: %v", v, causes[v])
		}
	}
	if _, ok := causes["none"]; ok {
		t.Errorf("a build with nothing varied differed: %+v", rep)
	}
	if rep.NotVaried[vary.Clock] == "" {
		t.Errorf("the clock is not reported as not varied: %+v", rep.NotVaried)
	}
	// Side by side: both builds' artifacts and provenance are kept.
	for _, b := range []string{"build-0", "build-1"} {
		for _, f := range []string{"artifacts/out/uid", "provenance.intoto.json", "logs/probe.log"} {
			if _, err := os.Stat(filepath.Join(out, b, f)); err != nil {
				t.Errorf("%s: %v", b, err)
			}
		}
	}
	uid, _ := os.ReadFile(filepath.Join(out, "build-1", "artifacts", "out", "uid"))
	if strings.TrimSpace(string(uid)) == "0" {
		t.Errorf("build-1 ran as root")
	}
	if !strings.Contains(r.stdout, "NOT reproduced") || !strings.Contains(r.stdout, "cause: uid") {
		t.Errorf("text report:\n%s", r.stdout)
	}
	// The workspace's own files were not overwritten by any build.
	if _, err := os.Stat(filepath.Join(e.dir, "out")); err == nil {
		t.Errorf("a rebuild wrote artifacts into the workspace")
	}
	requireNoResidue(t)
}

// A build that embeds the time and random data differs with nothing
// varied; the report says so, and diffoscope's report (when installed)
// is saved.
func TestRebuildCatchesTimeAndRandomness(t *testing.T) {
	e := newEnv(t)
	e.pipeline(`version: 1
image: IMAGE
steps:
  - name: prepare
    run: mkdir -p out && echo fixed > out/fixed
  - name: stamp
    run: |
      # a second at least after the build before it wrote its date
      sleep 1
      date > out/stamp
      head -c 16 /dev/urandom | od -x > out/random
artifacts: ["out/*"]
`)
	r := e.run(nil, "rebuild", "--vary", "hostname")
	if r.code != 1 {
		t.Fatalf("%s", r)
	}
	out := filepath.Join(e.dir, ".cleanroom", "rebuild")
	rep := readRebuildReport(t, out)
	if len(rep.Causes) != 1 || rep.Causes[0].Variation != "none" || !slices.Equal(rep.Causes[0].Artifacts, []string{"out/random", "out/stamp"}) {
		t.Fatalf("causes: %+v", rep.Causes)
	}
	if d := rep.Builds[0].Divergence; d == nil || d.Step != "stamp" {
		t.Fatalf("the first differing step is stamp: %+v", rep.Builds[0].Divergence)
	}
	if _, err := exec.LookPath("diffoscope"); err == nil {
		if len(rep.Diffoscope) != 2 {
			t.Fatalf("diffoscope reports: %+v", rep.Diffoscope)
		}
		for _, d := range rep.Diffoscope {
			b, err := os.ReadFile(d.Report)
			if d.Error != "" || err != nil || !strings.Contains(string(b), d.Artifact) {
				t.Errorf("diffoscope report of %s: %v %s\n%s", d.Artifact, err, d.Error, b)
			}
		}
	} else if rep.DiffoscopeNote == "" {
		t.Errorf("no note that diffoscope is missing")
	}
	requireNoResidue(t)
}

// A reproducible pipeline passes with every variation on, and run --check
// uses the run as its reference.
func TestRebuildOfReproduciblePipelinePasses(t *testing.T) {
	e := newEnv(t)
	e.pipeline(`version: 1
image: IMAGE
steps:
  - name: build
    run: mkdir -p out && echo "built from $(cat src.txt)" > out/app && chmod 0755 out/app
artifacts: ["out/app"]
`)
	os.WriteFile(filepath.Join(e.dir, "src.txt"), []byte("source"), 0o644)
	r := e.run(nil, "rebuild", "--check", "2")
	if r.code != 0 || !strings.Contains(r.stdout, "rebuild: reproduced") {
		t.Fatalf("%s", r)
	}
	rep := readRebuildReport(t, filepath.Join(e.dir, ".cleanroom", "rebuild"))
	if !rep.Reproduced || len(rep.Builds) != 2 || len(rep.Builds[1].Varied) < 8 {
		t.Fatalf("report %+v", rep)
	}
	r = e.run(nil, "run", "--check", "1")
	if r.code != 0 || !strings.Contains(r.stdout, "rebuild: reproduced") {
		t.Fatalf("run --check: %s", r)
	}
	r = e.run(nil, "run", "--check", "1", "-o", "json")
	var both struct {
		Run struct {
			Status string `json:"status"`
		} `json:"run"`
		Check rebuildReport `json:"check"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &both); err != nil || r.code != 0 || both.Run.Status != "ok" || !both.Check.Reproduced || len(both.Check.Builds) != 1 {
		t.Fatalf("run --check -o json: %v\n%s", err, r)
	}
	if _, err := os.Stat(filepath.Join(e.dir, ".cleanroom", "check", "build-1", "artifacts", "out", "app")); err != nil {
		t.Fatal(err)
	}
	requireNoResidue(t)
}

// Two runs of a pipeline whose middle step embeds random data: the
// provenances carry every step's workspace digests, and cleanroom diff
// names the middle step as the first to diverge, without building.
func TestDiffFindsTheFirstDivergingStep(t *testing.T) {
	e := newEnv(t)
	e.pipeline(`version: 1
image: IMAGE
steps:
  - name: one
    run: mkdir -p out && echo one > out/one
  - name: two
    run: cat /proc/sys/kernel/random/uuid > out/two
  - name: three
    run: cat out/one out/two > out/all
artifacts: ["out/all"]
`)
	gitCommit(t, e.dir, "2026-01-02T03:04:05Z")
	a, b := filepath.Join(e.dir+".out", "a"), filepath.Join(e.dir+".out", "b")
	for _, out := range []string{a, b} {
		if r := e.run(nil, "run", "--out", out); r.code != 0 {
			t.Fatalf("%s", r)
		}
	}
	pa, pb := filepath.Join(a, "provenance.intoto.json"), filepath.Join(b, "provenance.intoto.json")
	raw, _ := os.ReadFile(pa)
	var st struct {
		Predicate struct {
			BuildDefinition struct {
				InternalParameters struct {
					SourceDateEpoch struct {
						Value float64 `json:"value"`
						From  string  `json:"from"`
					} `json:"sourceDateEpoch"`
				} `json:"internalParameters"`
			} `json:"buildDefinition"`
			RunDetails struct {
				Byproducts []struct {
					Name   string            `json:"name"`
					Digest map[string]string `json:"digest"`
				} `json:"byproducts"`
			} `json:"runDetails"`
		} `json:"predicate"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	if s := st.Predicate.BuildDefinition.InternalParameters.SourceDateEpoch; s.Value != 1767323045 || s.From != "git commit" {
		t.Fatalf("sourceDateEpoch %+v", s)
	}
	var stepDigests int
	for _, bp := range st.Predicate.RunDetails.Byproducts {
		if strings.HasPrefix(bp.Name, "steps/") && len(bp.Digest["sha256"]) == 64 {
			stepDigests++
		}
	}
	if stepDigests != 6 {
		t.Fatalf("want before and after digests of 3 steps, got %d:\n%s", stepDigests, raw)
	}
	r := e.run(nil, "diff", pa, pb)
	if r.code != 1 || !strings.Contains(r.stdout, `first diverging step: step "two"`) || !strings.Contains(r.stdout, "artifact differs: out/all") {
		t.Fatalf("diff: %s", r)
	}
	if strings.Contains(r.stdout, "input differs") {
		t.Fatalf("same inputs reported as different: %s", r)
	}
	if r := e.run(nil, "diff", pa, pa); r.code != 0 || !strings.Contains(r.stdout, "the same inputs") {
		t.Fatalf("diff of a provenance with itself: %s", r)
	}
}

// A replay whose store lacks recorded bodies lists every missing one and
// starts no step; a replay in a changed workspace is not "reproduced",
// even though its artifacts are the same.
func TestReplayPreflightAndChangedWorkspace(t *testing.T) {
	e := newEnv(t)
	var hits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte("body of " + r.URL.Path))
	}))
	defer up.Close()
	hostPort := strings.TrimPrefix(up.URL, "http://")
	e.pipeline(fmt.Sprintf(`version: 1
image: IMAGE
steps:
  - name: fetch
    egress: {allow: ["%s"]}
    run: mkdir -p out && wget -q -O out/a http://%s/a && wget -q -O out/b http://%s/b
artifacts: ["out/*"]
`, hostPort, hostPort, hostPort))
	os.WriteFile(filepath.Join(e.dir, "notes.txt"), []byte("v1"), 0o644)
	cache := t.TempDir()
	rec := filepath.Join(e.dir+".out", "rec")
	if r := e.run(nil, "run", "--cache", cache, "--out", rec); r.code != 0 {
		t.Fatalf("%s", r)
	}
	prov := filepath.Join(rec, "provenance.intoto.json")
	r := e.run(nil, "run", "--replay", prov, "--cache", t.TempDir(), "--out", filepath.Join(e.dir+".out", "empty"))
	if r.code != 2 || !strings.Contains(r.stderr, "2 recorded materials are not available") ||
		!strings.Contains(r.stderr, up.URL+"/a") || !strings.Contains(r.stderr, up.URL+"/b") {
		t.Fatalf("preflight: %s", r)
	}
	if strings.Contains(r.stderr, "step starting") {
		t.Fatalf("a step started before the preflight failed: %s", r)
	}
	// The same materials, another workspace.
	os.WriteFile(filepath.Join(e.dir, "notes.txt"), []byte("v2"), 0o644)
	r = e.run(nil, "run", "--replay", prov, "--cache", cache, "--out", filepath.Join(e.dir+".out", "changed"))
	if r.code != 1 || strings.Contains(r.stdout, "replay: reproduced") || !strings.Contains(r.stdout, "the workspace differs from the recorded one") {
		t.Fatalf("changed workspace: %s", r)
	}
	if strings.Contains(r.stdout, "differs: out/") {
		t.Fatalf("the artifacts are the same: %s", r)
	}
	requireNoResidue(t)
}
