package gitlab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// envLoop is how gitlab-runner's bash writer reads GITLAB_ENV.
func envLoop(file string) string {
	return fmt.Sprintf("mkdir -p %q\ntouch %q\nwhile read -r line; do export \"$line\"; done < %q\n", filepath.Dir(file), file, file)
}

// A helper stage's script keeps GitLab's own variables and loses every
// job variable that makes git or the shell run something, and the
// GITLAB_ENV file the job's stages write is never read: git, run by the
// rewritten script as get_sources runs it, runs nothing of the job's.
// Without the rewrite the same script runs the job's fsmonitor, ssh
// command and GITLAB_ENV PATH (checked first, so the attack is real).
func TestRewriteHelperScriptRunsNoJobCode(t *testing.T) {
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("SKIP: git not installed")
	}
	dir := t.TempDir()
	marker := filepath.Join(dir, "pwned")
	evil := filepath.Join(dir, "evil.sh")
	os.WriteFile(evil, []byte("#!/bin/sh\necho \"$0 $*\" >> "+marker+"\nexit 1\n"), 0o755)
	bin := filepath.Join(dir, "bin")
	os.MkdirAll(bin, 0o755)
	os.WriteFile(filepath.Join(bin, "gitlab-runner"), []byte("#!/bin/sh\necho planted >> "+marker+"\n"), 0o755)
	envFile := filepath.Join(dir, "project.tmp", "gitlab_runner_env")
	os.MkdirAll(filepath.Dir(envFile), 0o755)
	// What a build_script appends to $GITLAB_ENV.
	os.WriteFile(envFile, []byte("PATH="+bin+":/usr/bin:/bin\nGIT_CONFIG_PARAMETERS='core.fsmonitor'='"+evil+"'\n"), 0o644)

	vars := []scriptVar{
		{key: "CI_JOB_ID", value: "4242"},
		{key: "CI_PROJECT_DIR", value: filepath.Join(dir, "project")},
		{key: "GIT_DEPTH", value: "20"},
		{key: "GIT_CONFIG_COUNT", value: "1"},
		{key: "GIT_CONFIG_KEY_0", value: "core.fsmonitor"},
		{key: "GIT_CONFIG_VALUE_0", value: evil},
		{key: "GIT_SSH_COMMAND", value: evil},
		{key: "GIT_ASKPASS", value: evil},
		{key: "BASH_ENV", value: evil},
		{key: "SIGSTORE_ID_TOKEN", value: testToken},
	}
	resp := &Response{}
	for _, v := range vars {
		resp.Variables = append(resp.Variables, Variable{Key: v.key, Value: v.value})
	}
	body := envLoop(envFile) + `cd "$CI_PROJECT_DIR"
git init -q .
echo x > f
git add f
git -c user.name=t -c user.email=t@example.org commit -q -m m
git status --porcelain >/dev/null
gitlab-runner --version 2>/dev/null || echo "no gitlab-runner"
echo "DEPTH=$GIT_DEPTH JOB=$CI_JOB_ID"
env | grep -E '^(GIT_|BASH_ENV|SIGSTORE)' | sort || true
`
	run := func(script string) string {
		t.Helper()
		os.RemoveAll(filepath.Join(dir, "project"))
		os.MkdirAll(filepath.Join(dir, "project"), 0o755)
		os.Remove(marker)
		p := filepath.Join(t.TempDir(), "script")
		os.WriteFile(p, []byte(script), 0o700)
		cmd := exec.Command("/bin/bash", p)
		cmd.Env = append([]string{"PATH=" + filepath.Dir(git) + ":/usr/bin:/bin", "HOME=" + dir}, helperGitEnv...)
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	for _, sh := range shapes[:2] {
		orig := makeScript(sh, vars, filepath.Join(dir, "project.tmp"), body)
		run(orig)
		if b, _ := os.ReadFile(marker); len(b) == 0 {
			t.Fatalf("%s: the attack did not work on the original script; the test proves nothing", sh.name)
		}
		got, err := RewriteHelperScript(orig, helperDroppedKeys(resp, []string{SigstoreTokenVariable}), []string{testToken})
		if err != nil {
			t.Fatalf("%s: %v", sh.name, err)
		}
		out := run(got)
		if b, _ := os.ReadFile(marker); len(b) > 0 {
			t.Errorf("%s: the job's code ran in the helper stage: %s\n%s\n--- script\n%s", sh.name, b, out, got)
		}
		for _, want := range []string{"DEPTH=20 JOB=4242", "no gitlab-runner", "GIT_CONFIG_KEY_0=core.fsmonitor", "GIT_CONFIG_VALUE_0=false"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: output lacks %q:\n%s", sh.name, want, out)
			}
		}
		for _, bad := range []string{"GIT_SSH_COMMAND", "GIT_ASKPASS", "BASH_ENV", "SIGSTORE", evil} {
			if strings.Contains(out, bad) {
				t.Errorf("%s: %s reached the helper stage:\n%s", sh.name, bad, out)
			}
		}
	}
}

// A helper script that reads GITLAB_ENV some other way is refused.
func TestRewriteHelperScriptRefusesUnknownEnvFileRead(t *testing.T) {
	s := makeScript(shapes[0], nil, "/b/p.tmp", "cat /b/p.tmp/gitlab_runner_env | while read -r line; do export \"$line\"; done\n")
	if _, err := RewriteHelperScript(s, nil, nil); err != ErrEnvFileInHelper {
		t.Fatalf("got %v, want ErrEnvFileInHelper", err)
	}
}

func TestHelperVariableAllowed(t *testing.T) {
	for k, want := range map[string]bool{
		"CI_JOB_TOKEN": true, "FF_USE_FASTZIP": true, "GIT_DEPTH": true, "CACHE_COMPRESSION_LEVEL": true,
		"GIT_CONFIG_COUNT": false, "GIT_CONFIG_PARAMETERS": false, "GIT_SSH_COMMAND": false, "GIT_ASKPASS": false,
		"SSH_ASKPASS": false, "GIT_EXEC_PATH": false, "GIT_TEMPLATE_DIR": false, "PATH": false, "LD_PRELOAD": false,
		"BASH_ENV": false, "ENV": false, "HTTP_PROXY": false, "MY_SETTING": false,
	} {
		if got := HelperVariableAllowed(k); got != want {
			t.Errorf("HelperVariableAllowed(%q) = %v, want %v", k, got, want)
		}
	}
}
