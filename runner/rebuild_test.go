package runner

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cleanroom-ci/cleanroom/internal/testenv"
	"github.com/cleanroom-ci/cleanroom/runner/vary"
)

func TestSourceDateEpochSources(t *testing.T) {
	testenv.RequireBinary(t, "git")
	dir := t.TempDir()
	if got := sourceDateEpoch(Config{Workspace: dir}); got != nil {
		t.Fatalf("not a git tree: %+v", got)
	}
	os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644)
	for _, args := range [][]string{{"init", "-q"}, {"add", "f"}, {"-c", "user.name=t", "-c", "user.email=t@example.test", "commit", "-q", "-m", "m"}} {
		cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_COMMITTER_DATE=2026-01-02T03:04:05Z", "GIT_AUTHOR_DATE=2026-01-02T03:04:05Z")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git: %v %s", err, out)
		}
	}
	if got := sourceDateEpoch(Config{Workspace: dir}); got == nil || got.Value != 1767323045 || got.From != EpochFromGit {
		t.Fatalf("git: %+v", got)
	}
	flag := int64(42)
	if got := sourceDateEpoch(Config{Workspace: dir, SourceDateEpoch: &flag}); got.Value != 42 || got.From != EpochFromFlag {
		t.Fatalf("flag: %+v", got)
	}
	rec := int64(7)
	if got := sourceDateEpoch(Config{Workspace: dir, Replay: &Replay{SourceDateEpoch: &rec}}); got.Value != 7 || got.From != EpochFromReplay {
		t.Fatalf("replay: %+v", got)
	}
	p := vary.For([]string{vary.SourceDateEpoch}, 2)
	if got := sourceDateEpoch(Config{Workspace: dir, Vary: p}); got.Value != 1767323045+2*86400 || got.From != EpochFromGit+" (varied)" {
		t.Fatalf("varied: %+v", got)
	}
}

func TestReproEnvLeavesThePipelinesValues(t *testing.T) {
	cfg := Config{sde: &epoch{Value: 100}, Vary: vary.For([]string{vary.Timezone, vary.Locale}, 1)}
	env := reproEnv(cfg, []string{"TZ=Europe/Zurich", "A=b"})
	for _, want := range []string{"TZ=Europe/Zurich", "A=b", "SOURCE_DATE_EPOCH=100", "LANG=" + cfg.Vary.Locale, "LC_ALL=" + cfg.Vary.Locale} {
		if !slices.Contains(env, want) {
			t.Errorf("missing %s in %v", want, env)
		}
	}
	if slices.Contains(env, "TZ="+cfg.Vary.TZ) {
		t.Errorf("the variation overrode the pipeline's TZ: %v", env)
	}
	if got := reproEnv(Config{sde: &epoch{Value: 1}}, []string{"SOURCE_DATE_EPOCH=5"}); !slices.Equal(got, []string{"SOURCE_DATE_EPOCH=5"}) {
		t.Errorf("the pipeline's SOURCE_DATE_EPOCH was overridden: %v", got)
	}
}
