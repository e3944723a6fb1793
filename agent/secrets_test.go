package agent

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cleanroom-ci/cleanroom/agent/jobs"
)

func TestSecretsScope(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "token")
	os.WriteFile(f, []byte("s3cret-value\n"), 0o600)
	a := &Agent{cfg: &Config{Secrets: []Secret{{Name: "TOKEN", File: f, Repositories: []string{"https://git.example.org/team/*"}, Refs: []string{"refs/heads/main"}}}}}
	job := func(mod func(*jobs.Job)) *jobs.Job {
		j := &jobs.Job{Source: jobs.Source{Kind: "git", Repository: "https://Git.Example.org/team/app.git", Ref: "refs/heads/main"}, Trigger: jobs.Trigger{Kind: "github", Hook: "app"}}
		mod(j)
		return j
	}
	for _, tc := range []struct {
		name string
		j    *jobs.Job
		want bool
	}{
		{"webhook push to main", job(func(*jobs.Job) {}), true},
		{"another branch", job(func(j *jobs.Job) { j.Source.Ref = "refs/heads/dev" }), false},
		{"another repository", job(func(j *jobs.Job) { j.Source.Repository = "https://git.example.org/other/app.git" }), false},
		{"untrusted", job(func(j *jobs.Job) { j.Untrusted = true }), false},
		{"API submission naming main", job(func(j *jobs.Job) { j.Trigger = jobs.Trigger{Kind: "api", Token: "ci"} }), false},
		{"upload", job(func(j *jobs.Job) { j.Source = jobs.Source{Kind: "tarball"} }), false},
	} {
		got, err := a.secretsFor(tc.j)
		if err != nil {
			t.Fatal(err)
		}
		if (got["TOKEN"] == "s3cret-value") != tc.want || (!tc.want && len(got) != 0) {
			t.Errorf("%s: %v", tc.name, got)
		}
	}
}
