package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/cleanroom-ci/cleanroom/agent/jobs"
	"github.com/cleanroom-ci/cleanroom/agent/webhook"
	"github.com/cleanroom-ci/cleanroom/internal/glob"
	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
)

// Secret is an agent-side secret (or a directory of them) handed to the
// steps of the jobs it is scoped to, as `cleanroom run --secret` does:
// an environment variable, masked in logs, never in the provenance.
type Secret struct {
	// Name and File: one secret; Dir: one secret per regular file in
	// it, named after the file. Values are read when a job starts, so a
	// rotated file takes effect on the next job without a restart.
	Name, File, Dir string
	// Repositories are the clone URLs whose jobs get it (globs of
	// internal/glob on the normalised URL); Refs the refs (the same
	// globs; default every branch).
	Repositories []string
	Refs         []string
}

var secretNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// secretNameOK refuses names the child's own environment uses.
func secretNameOK(n string) bool {
	switch n {
	case "PATH", "HOME", "GOPROXY", "COSIGN_PASSWORD":
		return false
	}
	return secretNameRE.MatchString(n) && !pipeline.ReservedEnv(n)
}

// secretsFor returns the secrets (name → value) a job gets. Only jobs a
// webhook delivered for a push or a request from the repository itself
// get any: their repository and ref come from the forge, authenticated.
// An API submission names its own ref (a submitter could claim
// refs/heads/main for any commit), an upload has neither, and an untrusted
// build (a fork's pull request) is exactly what secrets must not reach.
func (a *Agent) secretsFor(j *jobs.Job) (map[string]string, error) {
	if j.Untrusted || j.Trigger.Hook == "" || j.Source.Kind != "git" {
		return nil, nil
	}
	repo, err := webhook.NormalizeRepo(j.Source.Repository)
	if err != nil {
		return nil, nil
	}
	out := map[string]string{}
	for _, s := range a.cfg.Secrets {
		if !matchesAny(s.Repositories, repo, normalizePattern) {
			continue
		}
		if len(s.Refs) == 0 && !strings.HasPrefix(j.Source.Ref, "refs/heads/") || len(s.Refs) > 0 && !matchesAny(s.Refs, j.Source.Ref, nil) {
			continue
		}
		vals, err := s.read()
		if err != nil {
			return nil, err
		}
		for k, v := range vals {
			out[k] = v
		}
	}
	return out, nil
}

// normalizePattern puts a repository pattern in the form repositories
// are compared in; a glob that is no URL (a port of "*") loses its
// trailing "/" and ".git" at least.
func normalizePattern(p string) string {
	if n, err := webhook.NormalizeRepo(p); err == nil {
		return n
	}
	return strings.TrimSuffix(strings.TrimSuffix(p, "/"), ".git")
}

func matchesAny(patterns []string, s string, norm func(string) string) bool {
	for _, p := range patterns {
		if norm != nil {
			if n := norm(p); n != "" {
				p = n
			}
		}
		if g, err := glob.Compile(p); err == nil && g.Match(s) {
			return true
		}
	}
	return false
}

// read loads the secret's value(s) now.
func (s Secret) read() (map[string]string, error) {
	out := map[string]string{}
	if s.File != "" {
		b, err := os.ReadFile(s.File)
		if err != nil {
			return nil, fmt.Errorf("secret %s: %w", s.Name, err)
		}
		out[s.Name] = strings.TrimRight(string(b), "\r\n")
	}
	if s.Dir != "" {
		ents, err := os.ReadDir(s.Dir)
		if err != nil {
			return nil, fmt.Errorf("secrets in %s: %w", s.Dir, err)
		}
		for _, e := range ents {
			if !e.Type().IsRegular() || !secretNameOK(e.Name()) {
				continue // dot files, editors' backups, subdirectories
			}
			b, err := os.ReadFile(filepath.Join(s.Dir, e.Name()))
			if err != nil {
				return nil, fmt.Errorf("secret %s: %w", e.Name(), err)
			}
			out[e.Name()] = strings.TrimRight(string(b), "\r\n")
		}
	}
	for k, v := range out {
		if len(v) < 4 {
			return nil, fmt.Errorf("secret %s: a value shorter than 4 characters cannot be masked reliably", k)
		}
	}
	return out, nil
}

// secretArgs adds the secrets to a child's command line and environment.
func secretArgs(secrets map[string]string, args, env []string) ([]string, []string) {
	names := make([]string, 0, len(secrets))
	for k := range secrets {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		args = append(args, "--secret", k)
		env = append(env, k+"="+secrets[k])
	}
	return args, env
}
