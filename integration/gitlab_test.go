package integration

// GitLab custom-executor driver, end to end through the built binary.
//
// These tests check conformance to the custom executor contract as
// documented for gitlab-runner 19.x (see docs/gitlab.md): a harness in Go
// plays gitlab-runner's part exactly as its custom executor does (a
// custom-executor* temp dir as cwd and TMPDIR, response.json,
// CUSTOM_ENV_*, the contract variables, each call the leader of its own
// process group, SIGTERM then SIGKILL to the group, prepare retried after
// a cleanup, the stage sequence with clear_worktree and the on_failure
// variants, stage scripts shaped like the runner's bash scripts). It is
// not a test against the real gitlab-runner binary: that is
// TestGitLabRunSingle, which needs GITLAB_RUNNER_BIN and otherwise skips
// with a SKIP: line.
//
// A loopback fake GitLab (httptest on 127.0.0.1) serves the API and a
// bare git repository through `git http-backend`, so get_sources really
// clones, through the helper sandbox's egress proxy.

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/internal/testenv"
	"github.com/cleanroom-ci/cleanroom/internal/testimage"
)

// gitHTTPBackend is Debian git's CGI program.
const gitHTTPBackend = "/usr/lib/git-core/git-http-backend"

// Contract timeouts the harness applies, as gitlab-runner does for every
// driver call: SIGTERM to the group, then SIGKILL after the graceful
// timeout (the runner's defaults are 600 s and 10 s; shorter here).
const (
	gracefulKillTimeout = 30 * time.Second
	forceKillTimeout    = 10 * time.Second
	// stopGrace is the policy's stop_grace in these tests.
	stopGrace = 3 * time.Second
)

// fakeGitLab is a loopback GitLab: the API endpoints the helper stages
// touch, and the project's repository over smart HTTP.
type fakeGitLab struct {
	*httptest.Server
	token    string
	repoRoot string
	sha      string

	mu        sync.Mutex
	requests  []string          // "METHOD path" of every request
	uploads   map[string][]byte // artifact uploads by job id
	failClone atomic.Int32      // git requests left to fail with 500
}

func newFakeGitLab(t *testing.T) *fakeGitLab {
	t.Helper()
	testenv.RequireBinary(t, "git")
	if _, err := os.Stat(gitHTTPBackend); err != nil {
		testenv.Missing(t, gitHTTPBackend+" (Debian's git)")
	}
	f := &fakeGitLab{token: "glcbt-" + randHex(t, 10), repoRoot: t.TempDir(), uploads: map[string][]byte{}}
	f.sha = makeRepo(t, f.repoRoot)
	git := &cgi.Handler{
		Path: gitHTTPBackend,
		Env:  []string{"GIT_PROJECT_ROOT=" + f.repoRoot, "GIT_HTTP_EXPORT_ALL=1"},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/group/project.git/", func(w http.ResponseWriter, r *http.Request) {
		// As GitLab does, the clone needs the job token.
		if u, p, ok := r.BasicAuth(); !ok || u != "gitlab-ci-token" || p != f.token {
			w.Header().Set("WWW-Authenticate", `Basic realm="GitLab"`)
			http.Error(w, "HTTP Basic: Access denied", http.StatusUnauthorized)
			return
		}
		if f.failClone.Load() > 0 {
			f.failClone.Add(-1)
			http.Error(w, "try again", http.StatusInternalServerError)
			return
		}
		git.ServeHTTP(w, r)
	})
	mux.HandleFunc("/api/v4/", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/artifacts") {
			parts := strings.Split(r.URL.Path, "/")
			f.mu.Lock()
			f.uploads[parts[len(parts)-2]] = body
			f.mu.Unlock()
			w.WriteHeader(http.StatusCreated)
			return
		}
		fmt.Fprintln(w, "fake gitlab:", r.URL.Path)
	})
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.requests = append(f.requests, r.Method+" "+r.URL.Path)
		f.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeGitLab) hostPort() string { return strings.TrimPrefix(f.URL, "http://") }

func (f *fakeGitLab) saw(substr string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.requests {
		if strings.Contains(r, substr) {
			return true
		}
	}
	return false
}

func (f *fakeGitLab) upload(jobID int64) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.uploads[strconv.FormatInt(jobID, 10)]
}

// makeRepo creates group/project.git under root with one commit.
func makeRepo(t *testing.T, root string) string {
	t.Helper()
	work := t.TempDir()
	bare := filepath.Join(root, "group", "project.git")
	run := func(dir string, args ...string) string {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+work,
			"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.org", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.org")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	os.MkdirAll(filepath.Dir(bare), 0o755)
	run(root, "init", "-q", "--bare", "-b", "main", bare)
	run(work, "init", "-q", "-b", "main", ".")
	os.WriteFile(filepath.Join(work, "main.txt"), []byte("source of the build\n"), 0o644)
	os.WriteFile(filepath.Join(work, ".gitlab-ci.yml"), []byte("build:\n  script: [make]\n"), 0o644)
	run(work, "add", ".")
	run(work, "commit", "-q", "-m", "initial")
	run(work, "push", "-q", bare, "main")
	return run(work, "rev-parse", "HEAD")
}

func randHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// glEnv is one test's runner host: roots, images, policy, fake GitLab.
type glEnv struct {
	t          *testing.T
	dir        string
	buildsRoot string
	cacheRoot  string
	image      string // job image archive
	helper     string // helper image archive
	gl         *fakeGitLab
	policyPath string
}

type policyOpts struct {
	allowedImages []string
	services      []string // services.allowed
	defaultAllow  []string
	maximum       []string
	widen         bool
}

func newGLEnv(t *testing.T) *glEnv {
	t.Helper()
	testenv.RequireRoot(t)
	if _, err := os.Stat(address); err != nil {
		testenv.Missing(t, "containerd at "+address)
	}
	testenv.RequireBinary(t, "runc")
	e := &glEnv{t: t, dir: t.TempDir()}
	e.buildsRoot = filepath.Join(e.dir, "builds")
	e.cacheRoot = filepath.Join(e.dir, "cache")
	e.image = testimage.Busybox(t)
	e.helper = testimage.Helper(t)
	e.gl = newFakeGitLab(t)
	e.writePolicy(policyOpts{})
	return e
}

func (e *glEnv) writePolicy(o policyOpts) {
	e.t.Helper()
	if o.allowedImages == nil {
		o.allowedImages = []string{"oci-archive:" + filepath.Dir(e.image) + "/*.tar"}
	}
	q := func(l []string) string {
		b, _ := json.Marshal(l)
		if l == nil {
			return "[]"
		}
		return string(b)
	}
	policy := fmt.Sprintf(`# integration test policy
version: 1
builds_dir: %s
cache_dir: %s
builder_id: https://cleanroom.test/builder/gitlab-it
images:
  allowed: %s
services:
  allowed: %s
helper:
  image: oci-archive:%s
egress:
  default: %s
  maximum: %s
  job_may_widen: %t
limits:
  memory: 512MiB
  pids: 512
runner_only_variables: [VAULT_ID_TOKEN]
stop_grace: %s
`, e.buildsRoot, e.cacheRoot, q(o.allowedImages), q(o.services), e.helper, q(o.defaultAllow), q(o.maximum), o.widen, stopGrace)
	e.policyPath = filepath.Join(e.dir, "gitlab.yaml")
	if err := os.WriteFile(e.policyPath, []byte(policy), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// jobVar is a job variable as GitLab sends it.
type jobVar struct {
	Key    string `json:"key"`
	Value  string `json:"value"`
	Public bool   `json:"public"`
	File   bool   `json:"file"`
	Masked bool   `json:"masked"`
}

// glJob is one job as gitlab-runner's custom executor handles it.
type glJob struct {
	e          *glEnv
	id         int64
	tmp        string // the custom-executor* dir: cwd and TMPDIR
	vars       []jobVar
	image      string
	contract   [2]int // build and system failure exit codes
	jobEnv     map[string]string
	buildsDir  string
	projectDir string
	sigstore   string // the ID token
	vault      string // a runner-only file variable
	artifacts  []string
	services   []any            // the payload's services
	creds      []map[string]any // the payload's registry credentials
	log        lockedBuffer     // everything the job log would show
	calls      []string         // "stage=exit" of every run call
}

var jobIDs atomic.Int64

func init() { jobIDs.Store(time.Now().UnixNano()%1_000_000*100 + 1000) }

func (e *glEnv) newJob(image string) *glJob {
	id := jobIDs.Add(1)
	tmp, err := os.MkdirTemp("", "custom-executor")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { os.RemoveAll(tmp) })
	j := &glJob{e: e, id: id, tmp: tmp, image: image, contract: [2]int{1, 2}, artifacts: []string{"out/"},
		creds: []map[string]any{{"type": "registry", "url": "registry.example.org", "username": "gitlab-ci-token", "password": e.gl.token}}}
	e.t.Cleanup(func() {
		if e.t.Failed() {
			e.t.Logf("job %d log:\n%s", id, j.log.String())
		}
	})
	j.sigstore = "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(`{"aud":"sigstore","sub":"project_path:group/project"}`)) + "." + randHex(e.t, 16)
	j.vault = "vault-" + randHex(e.t, 12)
	gl := e.gl
	project := gl.URL + "/group/project"
	j.vars = []jobVar{
		{Key: "CI_JOB_ID", Value: strconv.FormatInt(id, 10), Public: true},
		{Key: "CI_JOB_NAME", Value: "build", Public: true},
		{Key: "CI_JOB_STAGE", Value: "test", Public: true},
		{Key: "CI_PROJECT_ID", Value: "77", Public: true},
		{Key: "CI_PROJECT_PATH", Value: "group/project", Public: true},
		{Key: "CI_PROJECT_URL", Value: project, Public: true},
		{Key: "CI_SERVER_URL", Value: gl.URL, Public: true},
		{Key: "CI_API_V4_URL", Value: gl.URL + "/api/v4", Public: true},
		{Key: "CI_JOB_URL", Value: project + "/-/jobs/" + strconv.FormatInt(id, 10), Public: true},
		{Key: "CI_COMMIT_SHA", Value: gl.sha, Public: true},
		{Key: "CI_COMMIT_REF_NAME", Value: "main", Public: true},
		{Key: "CI_CONFIG_PATH", Value: ".gitlab-ci.yml", Public: true},
		{Key: "CI_JOB_TOKEN", Value: gl.token, Masked: true},
		{Key: "CI_REPOSITORY_URL", Value: "http://gitlab-ci-token:" + gl.token + "@" + gl.hostPort() + "/group/project.git"},
		{Key: "GREETING", Value: "hello from a job variable", Public: true},
		{Key: "SIGSTORE_ID_TOKEN", Value: j.sigstore, Masked: true},
		{Key: "VAULT_ID_TOKEN", Value: j.vault, Masked: true, File: true},
	}
	return j
}

func (j *glJob) setVar(key, value string) {
	for i := range j.vars {
		if j.vars[i].Key == key {
			j.vars[i].Value = value
			return
		}
	}
	j.vars = append(j.vars, jobVar{Key: key, Value: value, Public: true})
}

func (j *glJob) responseFile() string { return filepath.Join(j.tmp, "response.json") }
func (j *glJob) exitCodeFile() string { return filepath.Join(j.tmp, "build_exit_code") }
func (j *glJob) stateDir() string {
	return filepath.Join(stateDir, "gitlab", strconv.FormatInt(j.id, 10))
}
func (j *glJob) provenancePath() string {
	return filepath.Join(j.projectDir, ".cleanroom", "provenance.intoto.json")
}

// writeResponse writes the job payload as gitlab-runner stores it.
func (j *glJob) writeResponse() {
	arts := []map[string]any{}
	if len(j.artifacts) > 0 {
		arts = append(arts, map[string]any{"name": "build", "paths": j.artifacts, "when": "on_success", "artifact_type": "archive", "artifact_format": "zip"})
	}
	services := j.services
	if services == nil {
		services = []any{}
	}
	resp := map[string]any{
		"id":    j.id,
		"token": j.e.gl.token,
		"job_info": map[string]any{
			"id": j.id, "name": "build", "stage": "test", "project_id": 77, "project_name": "project",
		},
		"git_info": map[string]any{
			"repo_type": "git", "repo_url": j.e.gl.URL + "/group/project.git", "ref": "main",
			"sha": j.e.gl.sha, "ref_type": "branch", "refspecs": []string{"+refs/heads/main:refs/remotes/origin/main"}, "depth": 0,
		},
		"runner_info": map[string]any{"timeout": 3600},
		"variables":   j.vars,
		"steps": []map[string]any{
			{"name": "script", "script": []string{"make"}, "timeout": 3600, "when": "on_success", "allow_failure": false},
		},
		"image":       map[string]any{"name": j.image},
		"services":    services,
		"artifacts":   arts,
		"cache":       []any{},
		"credentials": j.creds,
		"features":    map[string]any{"trace_sections": true},
	}
	b, err := json.Marshal(resp)
	if err != nil {
		j.e.t.Fatal(err)
	}
	if err := os.WriteFile(j.responseFile(), b, 0o600); err != nil {
		j.e.t.Fatal(err)
	}
}

// allVars is what the runner passes as CUSTOM_ENV_* and exports in every
// script: the job's variables plus the runner's own (builds dir, project
// dir), as Build.GetAllVariables does.
func (j *glJob) allVars() []jobVar {
	vars := append([]jobVar{}, j.vars...)
	if j.buildsDir != "" {
		vars = append(vars,
			jobVar{Key: "CI_BUILDS_DIR", Value: j.buildsDir, Public: true},
			jobVar{Key: "CI_PROJECT_DIR", Value: j.projectDir, Public: true},
		)
	}
	vars = append(vars, jobVar{Key: "CI_SHARED_ENVIRONMENT", Value: "true", Public: true})
	return vars
}

func (j *glJob) environ() []string {
	env := append([]string{}, os.Environ()...)
	env = append(env,
		"TMPDIR="+j.tmp,
		fmt.Sprintf("BUILD_FAILURE_EXIT_CODE=%d", j.contract[0]),
		fmt.Sprintf("SYSTEM_FAILURE_EXIT_CODE=%d", j.contract[1]),
		"BUILD_EXIT_CODE_FILE="+j.exitCodeFile(),
		"JOB_RESPONSE_FILE="+j.responseFile(),
		"CLEANROOM_GITLAB_POLICY="+j.e.policyPath,
	)
	for k, v := range j.jobEnv {
		env = append(env, k+"="+v)
	}
	for _, v := range j.allVars() {
		value := v.Value
		env = append(env, "CUSTOM_ENV_"+v.Key+"="+value)
	}
	env = append(env, "CUSTOM_ENV_CI_JOB_SERVICES=", "CUSTOM_ENV_CI_JOB_IMAGE="+j.image)
	return env
}

// callResult is how one driver call ended.
type callResult struct {
	code     int
	stdout   string
	stderr   string
	duration time.Duration
}

func (r callResult) String() string {
	return fmt.Sprintf("exit %d after %s\n--- stdout\n%s\n--- stderr\n%s", r.code, r.duration.Round(time.Millisecond), r.stdout, r.stderr)
}

// start starts one driver call as gitlab-runner does: cwd and TMPDIR the
// job's temp dir, leader of its own process group.
func (j *glJob) start(stdout, stderr io.Writer, args ...string) *exec.Cmd {
	j.e.t.Helper()
	cmd := exec.Command(binary, append(append(baseArgs(), "gitlab"), args...)...)
	cmd.Dir = j.tmp
	cmd.Env = j.environ()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		j.e.t.Fatalf("start driver: %v", err)
	}
	return cmd
}

// wait waits for a call; when cancel fires first it terminates the
// group as the runner's process killer does: SIGTERM, the graceful
// timeout, SIGKILL, the force timeout.
func (j *glJob) wait(cmd *exec.Cmd, cancel <-chan struct{}) int {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-cancel:
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case err = <-done:
		case <-time.After(gracefulKillTimeout):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			select {
			case err = <-done:
			case <-time.After(forceKillTimeout):
				j.e.t.Fatalf("driver call did not die after SIGKILL")
			}
		}
	}
	if ee, ok := err.(*exec.ExitError); ok {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	} else if err != nil {
		j.e.t.Fatalf("driver call: %v", err)
	}
	return 0
}

// call runs one driver call to completion (5 minutes at most).
func (j *glJob) call(args ...string) callResult {
	j.e.t.Helper()
	var out, errb lockedBuffer
	start := time.Now()
	cmd := j.start(&out, &errb, args...)
	timeout := make(chan struct{})
	timer := time.AfterFunc(5*time.Minute, func() { close(timeout) })
	defer timer.Stop()
	code := j.wait(cmd, timeout)
	r := callResult{code: code, stdout: out.String(), stderr: errb.String(), duration: time.Since(start)}
	fmt.Fprintf(&j.log, "$ gitlab %s → %d\n%s%s", strings.Join(args, " "), code, r.stdout, r.stderr)
	return r
}

// config runs config_exec and applies its output as the runner does.
func (j *glJob) config() callResult {
	j.e.t.Helper()
	j.writeResponse()
	r := j.call("config")
	if r.code != 0 {
		j.e.t.Fatalf("config: %s", r)
	}
	var out struct {
		BuildsDir         string            `json:"builds_dir"`
		CacheDir          string            `json:"cache_dir"`
		BuildsDirIsShared *bool             `json:"builds_dir_is_shared"`
		Hostname          string            `json:"hostname"`
		Driver            map[string]string `json:"driver"`
		JobEnv            map[string]string `json:"job_env"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		j.e.t.Fatalf("config output is not JSON: %v\n%s", err, r)
	}
	if out.BuildsDir == "" || out.CacheDir == "" || out.BuildsDirIsShared == nil || *out.BuildsDirIsShared || out.Driver["name"] != "cleanroom" {
		j.e.t.Fatalf("config output %+v", out)
	}
	j.jobEnv = out.JobEnv
	// StartBuild: <builds_dir>/<project slug> for a non-shared dir.
	j.buildsDir = out.BuildsDir
	j.projectDir = filepath.Join(out.BuildsDir, "group", "project")
	return r
}

// prepare runs prepare_exec with the runner's retries: up to 3 attempts,
// 3 s apart, retried only when the exit is not the build failure code,
// with cleanup_exec after every failed attempt.
func (j *glJob) prepare(betweenAttempts func(attempt int)) callResult {
	j.e.t.Helper()
	var r callResult
	for attempt := 1; attempt <= 3; attempt++ {
		r = j.call("prepare")
		if r.code == 0 || r.code == j.contract[0] {
			return r
		}
		if c := j.call("cleanup"); c.code != 0 {
			j.e.t.Fatalf("cleanup after a failed prepare: %s", c)
		}
		if betweenAttempts != nil {
			betweenAttempts(attempt)
		}
		time.Sleep(3 * time.Second)
	}
	return r
}

// stage runs one run_exec call with a script shaped like the runner's.
func (j *glJob) stage(stage, body string) callResult {
	j.e.t.Helper()
	path := j.writeScript(stage, body)
	r := j.call("run", path, stage)
	j.calls = append(j.calls, fmt.Sprintf("%s=%d", stage, r.code))
	return r
}

func (j *glJob) writeScript(stage, body string) string {
	j.e.t.Helper()
	dir, err := os.MkdirTemp(j.tmp, "script")
	if err != nil {
		j.e.t.Fatal(err)
	}
	path := filepath.Join(dir, "script")
	if err := os.WriteFile(path, []byte(runnerScript(j.allVars(), j.projectDir+".tmp", body, stage == "after_script")), 0o700); err != nil {
		j.e.t.Fatal(err)
	}
	return path
}

// cleanup runs cleanup_exec and then removes the temp dir, as the runner
// does; cleanup must always exit 0.
func (j *glJob) cleanup() {
	j.e.t.Helper()
	if r := j.call("cleanup"); r.code != 0 {
		j.e.t.Fatalf("cleanup must always exit 0: %s", r)
	}
	os.RemoveAll(j.tmp)
}

// runnerScript shapes a stage script like gitlab-runner's bash shell
// writer: shebang, a TERM trap, errexit and pipefail, then every job
// variable exported (file variables written to ${CI_PROJECT_DIR}.tmp),
// the GITLAB_ENV file's lines exported, followed by the stage's commands, all inside an ANSI-C quoted eval
// argument, in the current subshell form or the older `: | eval` form.
func runnerScript(vars []jobVar, tmpDir, body string, legacy bool) string {
	var b strings.Builder
	for _, v := range vars {
		if v.File {
			fmt.Fprintf(&b, "mkdir -p %q\n", tmpDir)
			fmt.Fprintf(&b, "printf '%%s' %s > %q\n", ansiC(v.Value), tmpDir+"/"+v.Key)
			fmt.Fprintf(&b, "export %s=%q\n", v.Key, tmpDir+"/"+v.Key)
			continue
		}
		fmt.Fprintf(&b, "export %s=%s\n", v.Key, ansiC(v.Value))
	}
	// GITLAB_ENV: what earlier stages appended is exported in this one.
	envFile := tmpDir + "/gitlab_runner_env"
	fmt.Fprintf(&b, "export GITLAB_ENV=%s\nmkdir -p %q\ntouch %q\nwhile read -r line; do export \"$line\"; done < %q\n", envFile, tmpDir, envFile, envFile)
	b.WriteString(body)
	if !strings.HasSuffix(body, "\n") {
		b.WriteString("\n")
	}
	s := "#!/usr/bin/env bash\n\ntrap 'exit 1' TERM\n\n" +
		`case "$(set -o)" in *"pipefail"*) set -o pipefail;; esac; set -o errexit` + "\n" +
		"set +o noclobber\n"
	if legacy {
		s += ": | eval " + ansiC(b.String()) + "\n"
	} else {
		s += "(trap 'exit 1' TERM; eval " + ansiC(b.String()) + ") < /dev/null\n"
	}
	return s + "exit 0\n"
}

// ansiC quotes like the runner's default escaping: plain when only safe
// characters, else $'…' with C escapes and \xHH for the rest.
func ansiC(s string) string {
	if s == "" {
		return "''"
	}
	var b strings.Builder
	quote := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', strings.IndexByte(",-./@_", c) >= 0:
			b.WriteByte(c)
		case c == '\n':
			b.WriteString(`\n`)
			quote = true
		case c == '\t':
			b.WriteString(`\t`)
			quote = true
		case c == '\r':
			b.WriteString(`\r`)
			quote = true
		case c == '\'' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
			quote = true
		case c >= 0x20 && c < 0x7f:
			b.WriteByte(c)
			quote = true
		default:
			fmt.Fprintf(&b, `\x%02x`, c)
			quote = true
		}
	}
	if !quote {
		return b.String()
	}
	return "$'" + b.String() + "'"
}

// Stage bodies.
const (
	prepareScriptBody = `echo "Running on $(hostname) via test-runner..."`
	getSourcesBody    = `echo "Fetching changes..."
rm -rf "$CI_PROJECT_DIR"
git clone -q "$CI_REPOSITORY_URL" "$CI_PROJECT_DIR"
cd "$CI_PROJECT_DIR"
git checkout -q -f "$CI_COMMIT_SHA"
echo "Checked out $(git rev-parse HEAD)"
`
	clearWorktreeBody = `echo "Deleting all tracked and untracked files due to source fetch failure"
rm -rf "$CI_PROJECT_DIR"
`
	cleanupFileVariablesBody = `rm -rf "$CI_PROJECT_DIR.tmp"
`
)

// uploadBody posts a file to the job's artifacts endpoint through the
// stage's egress proxy, standing in for `gitlab-runner
// artifacts-uploader` (busybox wget turns a proxied POST into a GET, so
// it is spoken with bash's /dev/tcp).
func uploadBody(file string) string {
	return `proxy=${http_proxy#http://}; proxy=${proxy%/}
server=${CI_SERVER_URL#http://}
len=$(wc -c < "` + file + `")
exec 3<>"/dev/tcp/${proxy%:*}/${proxy##*:}"
printf 'POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n' "$CI_API_V4_URL/jobs/$CI_JOB_ID/artifacts" "$server" "$len" >&3
cat "` + file + `" >&3
status=$(head -n1 <&3)
exec 3<&-
echo "upload: $status"
case "$status" in *" 201 "*) ;; *) exit 1;; esac
`
}

// userProbe is a user stage trying GitLab itself; it must be refused.
func userProbe(gl *fakeGitLab) string {
	return fmt.Sprintf(`if wget -q -O- %s/api/v4/user-probe; then echo "PROBE: reached gitlab"; else echo "PROBE: gitlab unreachable"; fi
`, gl.URL)
}

// runUntilBuild runs config, prepare, prepare_script and get_sources
// (with clear_worktree and a retry when the first clone fails).
func (j *glJob) runUntilBuild(getSourcesAttempts int) {
	t := j.e.t
	t.Helper()
	j.config()
	if r := j.prepare(nil); r.code != 0 {
		t.Fatalf("prepare: %s\njob log:\n%s", r, j.log.String())
	}
	if r := j.stage("prepare_script", prepareScriptBody); r.code != 0 {
		t.Fatalf("prepare_script: %s", r)
	}
	for attempt := 1; ; attempt++ {
		r := j.stage("get_sources", getSourcesBody)
		if r.code == 0 {
			break
		}
		if attempt >= getSourcesAttempts {
			t.Fatalf("get_sources: %s\njob log:\n%s", r, j.log.String())
		}
		if c := j.stage("clear_worktree", clearWorktreeBody); c.code != 0 {
			t.Fatalf("clear_worktree: %s", c)
		}
	}
}

// finish runs the post-build stages the runner sends for the outcome,
// then cleanup.
func (j *glJob) finish(success bool, afterScript, archive, upload string) {
	t := j.e.t
	t.Helper()
	if r := j.stage("after_script", afterScript); r.code != 0 {
		t.Errorf("after_script: %s", r)
	}
	suffix := "_on_failure"
	if success {
		suffix = ""
	}
	if r := j.stage("archive_cache"+suffix, archive); r.code != 0 {
		t.Errorf("archive_cache%s: %s", suffix, r)
	}
	if success {
		suffix = "_on_success"
	}
	if r := j.stage("upload_artifacts"+suffix, upload); r.code != 0 {
		t.Errorf("upload_artifacts%s: %s", suffix, r)
	}
	if r := j.stage("cleanup_file_variables", cleanupFileVariablesBody); r.code != 0 {
		t.Errorf("cleanup_file_variables: %s", r)
	}
}

// requireJobGone checks that cleanup left nothing of the job.
func (j *glJob) requireJobGone() {
	t := j.e.t
	t.Helper()
	requireNoResidue(t)
	// After the last job nothing of cleanroom's stays mounted, not even
	// the namespaces' directory.
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == filepath.Join(stateDir, "netns") {
			t.Errorf("%s is still a mount point after the last job's cleanup", f[4])
		}
	}
	for _, p := range []string{j.stateDir(), j.buildsDir} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s still exists after cleanup", p)
		}
	}
}

type glStatement struct {
	Subject []struct {
		Name   string            `json:"name"`
		Digest map[string]string `json:"digest"`
	} `json:"subject"`
	Predicate struct {
		BuildDefinition struct {
			BuildType            string         `json:"buildType"`
			ExternalParameters   map[string]any `json:"externalParameters"`
			InternalParameters   map[string]any `json:"internalParameters"`
			ResolvedDependencies []struct {
				URI         string            `json:"uri"`
				Name        string            `json:"name"`
				Digest      map[string]string `json:"digest"`
				Annotations map[string]any    `json:"annotations"`
			} `json:"resolvedDependencies"`
		} `json:"buildDefinition"`
		RunDetails struct {
			Builder struct {
				ID string `json:"id"`
			} `json:"builder"`
			Metadata struct {
				InvocationID string `json:"invocationId"`
			} `json:"metadata"`
		} `json:"runDetails"`
	} `json:"predicate"`
}

func parseGLStatement(t *testing.T, b []byte) glStatement {
	t.Helper()
	var st glStatement
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("provenance is not JSON: %v\n%s", err, b)
	}
	return st
}

// TestGitLabJobSucceedsHermeticallyWithProvenance runs a whole job:
// sources cloned through the helper sandbox (after one failed attempt and
// clear_worktree), a build in the job image that can neither see the
// runner-only secrets nor reach GitLab, helper stages that can, and the
// provenance written before the upload.
func TestGitLabJobSucceedsHermeticallyWithProvenance(t *testing.T) {
	e := newGLEnv(t)
	j := e.newJob("oci-archive:" + e.image)
	e.gl.failClone.Store(1)
	j.runUntilBuild(2)
	if !strings.Contains(j.log.String(), "Checked out "+e.gl.sha) {
		t.Fatalf("get_sources did not check out the commit:\n%s", j.log.String())
	}
	if !strings.Contains(strings.Join(j.calls, " "), "get_sources=1 clear_worktree=0 get_sources=0") {
		t.Fatalf("stage sequence %v: want a failed get_sources, clear_worktree and a retry", j.calls)
	}

	build := j.stage("build_script", `cd "$CI_PROJECT_DIR"
echo "== env"
env | sort
echo "== script"
cat "$0"
echo "== file variable"
cat "$CI_PROJECT_DIR.tmp/VAULT_ID_TOKEN" 2>&1 || echo "no VAULT_ID_TOKEN file"
echo "== probe"
`+userProbe(e.gl)+`mkdir -p out
cp main.txt out/app.txt
echo "built" > out/built.txt
`)
	if build.code != 0 {
		t.Fatalf("build_script: %s", build)
	}
	out := build.stdout + build.stderr
	for name, secret := range map[string]string{"SIGSTORE_ID_TOKEN": j.sigstore, "VAULT_ID_TOKEN": j.vault} {
		if strings.Contains(out, secret) {
			t.Errorf("the user stage saw the value of %s:\n%s", name, out)
		}
	}
	if strings.Contains(out, "SIGSTORE_ID_TOKEN") || strings.Contains(out, "CUSTOM_ENV_") {
		t.Errorf("the user stage's env or script names a runner-only or driver variable:\n%s", out)
	}
	if !strings.Contains(out, "GREETING=hello from a job variable") || !strings.Contains(out, "no VAULT_ID_TOKEN file") {
		t.Errorf("the job's other variables did not reach the user stage, or the runner-only file variable did:\n%s", out)
	}
	if !strings.Contains(out, "PROBE: gitlab unreachable") || e.gl.saw("user-probe") {
		t.Errorf("a user stage reached GitLab:\n%s", out)
	}

	j.finish(true,
		`echo "after_script ran"`,
		fmt.Sprintf("wget -q -O- %s/api/v4/helper-probe/archive_cache\n", e.gl.URL),
		`cd "$CI_PROJECT_DIR"
test -s .cleanroom/provenance.intoto.json
`+uploadBody(".cleanroom/provenance.intoto.json"))
	if !e.gl.saw("helper-probe/archive_cache") {
		t.Errorf("the helper stage did not reach GitLab:\n%s", j.log.String())
	}
	st := parseGLStatement(t, e.gl.upload(j.id))
	if st.Predicate.RunDetails.Builder.ID != "https://cleanroom.test/builder/gitlab-it" || !strings.HasSuffix(st.Predicate.RunDetails.Metadata.InvocationID, "/-/jobs/"+strconv.FormatInt(j.id, 10)) {
		t.Errorf("builder or invocation: %+v", st.Predicate.RunDetails)
	}
	var sourceOK bool
	for _, d := range st.Predicate.BuildDefinition.ResolvedDependencies {
		if d.Digest["gitCommit"] == e.gl.sha && strings.Contains(d.URI, "/group/project") {
			sourceOK = true
		}
	}
	if !sourceOK {
		t.Errorf("no source dependency with commit %s: %+v", e.gl.sha, st.Predicate.BuildDefinition.ResolvedDependencies)
	}
	want := sha256.Sum256([]byte("source of the build\n"))
	subjects := map[string]string{}
	for _, s := range st.Subject {
		subjects[s.Name] = s.Digest["sha256"]
	}
	if subjects["out/app.txt"] != hex.EncodeToString(want[:]) || subjects["out/built.txt"] == "" || len(subjects) != 2 {
		t.Errorf("subjects %v", subjects)
	}
	if strings.Contains(string(e.gl.upload(j.id)), j.sigstore) || strings.Contains(string(e.gl.upload(j.id)), e.gl.token) {
		t.Error("the provenance carries a secret")
	}
	j.cleanup()
	j.requireJobGone()
	// Cleanup is idempotent.
	j.tmp, _ = os.MkdirTemp("", "custom-executor")
	j.writeResponse()
	j.cleanup()
}

// TestGitLabBuildFailureExitCodes: a failing script exits with
// $BUILD_FAILURE_EXIT_CODE and writes its own status to
// $BUILD_EXIT_CODE_FILE; the on_failure stages still run and no
// provenance is written. Non-default contract codes prove the driver
// reads them.
func TestGitLabBuildFailureExitCodes(t *testing.T) {
	e := newGLEnv(t)
	j := e.newJob("oci-archive:" + e.image)
	j.contract = [2]int{5, 6}
	j.runUntilBuild(1)
	r := j.stage("build_script", "echo about to fail\nexit 42\n")
	if r.code != 5 {
		t.Fatalf("build_script: want exit 5 (BUILD_FAILURE_EXIT_CODE):\n%s", r)
	}
	b, err := os.ReadFile(j.exitCodeFile())
	if err != nil || strings.TrimSpace(string(b)) != "42" {
		t.Fatalf("BUILD_EXIT_CODE_FILE: %q, %v", b, err)
	}
	j.finish(false, `echo "after_script ran"`, `echo archive on failure`, `echo upload on failure`)
	if _, err := os.Stat(j.provenancePath()); err == nil {
		t.Error("a failed job got a provenance")
	}
	if !strings.Contains(j.log.String(), "after_script ran") {
		t.Errorf("after_script did not run:\n%s", j.log.String())
	}
	j.cleanup()
	j.requireJobGone()

	// A stage for a job that was never prepared is the system's failure.
	k := e.newJob("oci-archive:" + e.image)
	k.contract = [2]int{5, 6}
	k.config()
	if r := k.stage("build_script", "true"); r.code != 6 {
		t.Fatalf("run before prepare: want 6 (SYSTEM_FAILURE_EXIT_CODE):\n%s", r)
	}
	k.cleanup()
}

// TestGitLabCancelDuringBuildScript: SIGTERM to the run call's group (job
// cancel or timeout) reaches the stage's processes, which the script's
// TERM trap ends; run exits promptly, and after_script and the
// on_failure stages still run.
func TestGitLabCancelDuringBuildScript(t *testing.T) {
	e := newGLEnv(t)
	j := e.newJob("oci-archive:" + e.image)
	j.runUntilBuild(1)
	var out, errb lockedBuffer
	path := j.writeScript("build_script", "echo started\nsleep 300\necho never\n")
	start := time.Now()
	cmd := j.start(&out, &errb, "run", path, "build_script")
	waitFor(t, 60*time.Second, func() bool { return strings.Contains(out.String(), "started") })
	cancel := make(chan struct{})
	close(cancel)
	code := j.wait(cmd, cancel)
	took := time.Since(start)
	if code == 0 || code >= 128 {
		t.Fatalf("cancelled build_script exited %d (want a failure exit, not killed):\n%s\n%s", code, out.String(), errb.String())
	}
	t.Logf("cancelled build_script: exit %d after %s\n%s%s", code, took.Round(time.Millisecond), out.String(), errb.String())
	if took > 2*time.Minute || strings.Contains(out.String(), "never") {
		t.Fatalf("build_script did not stop promptly (%s):\n%s", took, out.String())
	}
	// A stage that ignores SIGTERM is killed once stop_grace is over.
	out, errb = lockedBuffer{}, lockedBuffer{}
	path = j.writeScript("step_release", `echo stubborn
sh -c 'trap "" TERM; while :; do sleep 1; done'
`)
	cmd = j.start(&out, &errb, "run", path, "step_release")
	waitFor(t, 60*time.Second, func() bool { return strings.Contains(out.String(), "stubborn") })
	start = time.Now()
	code = j.wait(cmd, cancel)
	took = time.Since(start)
	t.Logf("stubborn step_release: exit %d after %s\n%s%s", code, took.Round(time.Millisecond), out.String(), errb.String())
	if code != 1 || took < stopGrace || took > stopGrace+time.Minute {
		t.Fatalf("a stage ignoring SIGTERM: want exit 1 after about %s, got %d after %s", stopGrace, code, took)
	}
	requireNoResidue(t)

	j.finish(false, `echo "after_script ran after cancel"`, `echo archive on failure`, `echo upload on failure`)
	if !strings.Contains(j.log.String(), "after_script ran after cancel") {
		t.Errorf("after_script did not run after the cancel:\n%s", j.log.String())
	}
	if _, err := os.Stat(j.provenancePath()); err == nil {
		t.Error("a cancelled job got a provenance")
	}
	j.cleanup()
	j.requireJobGone()
}

// TestGitLabPolicyRefusals: an image the policy does not allow fails
// prepare as a system failure (as GitLab's own executors do), an egress
// request beyond the maximum as the job's fault (exit 1, not retried);
// an egress request within it widens the job's allowlist and the fetch
// is recorded in the provenance.
func TestGitLabPolicyRefusals(t *testing.T) {
	e := newGLEnv(t)
	dep := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "dependency body\n") })
	other := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {})
	e.writePolicy(policyOpts{maximum: []string{dep.hostPort()}, widen: true})

	// As GitLab's Docker executor does with a disallowed image: a system
	// failure (the runner retries prepare, then reports it).
	bad := e.newJob("oci-archive:/nonexistent/evil.tar")
	bad.config()
	r := bad.prepare(nil)
	if r.code != 2 || !strings.Contains(r.stderr, "not allowed") {
		t.Fatalf("prepare with a disallowed image: want exit 2 and a reason:\n%s", r)
	}
	bad.cleanup()

	wide := e.newJob("oci-archive:" + e.image)
	wide.setVar("CLEANROOM_EGRESS_ALLOW", other.hostPort())
	wide.config()
	if r := wide.prepare(nil); r.code != 1 || !strings.Contains(r.stderr, "egress.maximum") {
		t.Fatalf("prepare with egress beyond the maximum: want exit 1:\n%s", r)
	}
	wide.cleanup()

	ok := e.newJob("oci-archive:" + e.image)
	ok.setVar("CLEANROOM_EGRESS_ALLOW", dep.hostPort())
	ok.runUntilBuild(1)
	b := ok.stage("build_script", fmt.Sprintf(`cd "$CI_PROJECT_DIR"
mkdir -p out
wget -q -O out/dep.txt http://%s/dep.txt
wget -q -O- http://%s/other.txt && echo "OTHER: reached" || echo "OTHER: refused"
`, dep.hostPort(), other.hostPort()))
	if b.code != 0 || !strings.Contains(b.stdout, "OTHER: refused") {
		t.Fatalf("build_script: %s", b)
	}
	ok.finish(true, "true", "true", "true")
	data, err := os.ReadFile(ok.provenancePath())
	if err != nil {
		t.Fatalf("no provenance: %v\n%s", err, ok.log.String())
	}
	st := parseGLStatement(t, data)
	var fetched bool
	for _, d := range st.Predicate.BuildDefinition.ResolvedDependencies {
		if strings.HasSuffix(d.URI, dep.hostPort()+"/dep.txt") && d.Digest["sha256"] != "" {
			fetched = true
		}
	}
	if !fetched {
		t.Errorf("the widened fetch is not in the provenance: %s", data)
	}
	ok.cleanup()
	ok.requireJobGone()
}

// TestGitLabHelperStagesRunNoJobCode: nothing of the job's runs where
// GitLab is reachable. A job hook is refused; git configuration and
// commands in the job's variables, and what the build writes to
// GITLAB_ENV, never reach the helper stages (git there would run them
// with a route to GitLab: each tries to fetch a probe URL from GitLab);
// what the job image left in the builds directory before get_sources is
// gone. The job's own stages still get all of it.
func TestGitLabHelperStagesRunNoJobCode(t *testing.T) {
	e := newGLEnv(t)
	hooked := e.newJob("oci-archive:" + e.image)
	hooked.config()
	resp, _ := os.ReadFile(hooked.responseFile())
	resp = bytes.Replace(resp, []byte(`"features":`), []byte(`"hooks":[{"name":"pre_get_sources_script","script":["wget -q -O- `+e.gl.URL+`/api/v4/probe-hook"]}],"features":`), 1)
	os.WriteFile(hooked.responseFile(), resp, 0o600)
	if r := hooked.call("prepare"); r.code != 1 || !strings.Contains(r.stderr, "hooks:pre_get_sources_script is not supported") {
		t.Fatalf("prepare of a job with a hook: want exit 1 and the reason:\n%s", r)
	}
	hooked.cleanup()

	j := e.newJob("oci-archive:" + e.image)
	probe := func(name string) string { return "wget -q -O- " + e.gl.URL + "/api/v4/probe-" + name }
	j.setVar("GIT_CONFIG_COUNT", "1")
	j.setVar("GIT_CONFIG_KEY_0", "core.fsmonitor")
	j.setVar("GIT_CONFIG_VALUE_0", probe("fsmonitor")+"; false")
	j.setVar("GIT_SSH_COMMAND", probe("ssh"))
	j.setVar("BASH_ENV", "/dev/null")
	j.config()
	if r := j.prepare(nil); r.code != 0 {
		t.Fatalf("prepare: %s", r)
	}
	// The job image (prepare_script) plants a repository configuration.
	if r := j.stage("prepare_script", `mkdir -p "$CI_PROJECT_DIR/.git" && printf '[core]\n\tfsmonitor = wget -q -O- `+e.gl.URL+`/api/v4/probe-planted\n' > "$CI_PROJECT_DIR/.git/config" && echo planted`); r.code != 0 {
		t.Fatalf("prepare_script: %s", r)
	}
	src := j.stage("get_sources", `echo "contents: $(ls -A "$CI_PROJECT_DIR" 2>/dev/null | tr -s '[:space:]' ' ')."
env | grep -E '^(GIT_|BASH_ENV)' | sort
git init -q "$CI_PROJECT_DIR"
cd "$CI_PROJECT_DIR"
git fetch -q "$CI_REPOSITORY_URL" main
git checkout -q -f "$CI_COMMIT_SHA"
git status --porcelain
echo "Checked out $(git rev-parse HEAD)"
`)
	if src.code != 0 || !strings.Contains(src.stdout, "Checked out "+e.gl.sha) {
		t.Fatalf("get_sources: %s", src)
	}
	for _, bad := range []string{"probe-", "GIT_SSH_COMMAND", "BASH_ENV", "contents: .git"} {
		if strings.Contains(src.stdout, bad) {
			t.Errorf("get_sources saw %q:\n%s", bad, src.stdout)
		}
	}
	if !strings.Contains(src.stdout, "GIT_CONFIG_VALUE_0=false") {
		t.Errorf("get_sources lacks the driver's git settings:\n%s", src.stdout)
	}
	// The build writes GITLAB_ENV: the job's later stages read it, the
	// helper stages never.
	build := j.stage("build_script", `echo "GIT_CONFIG_VALUE_0=x" | grep -q x
env | grep -q '^GIT_SSH_COMMAND=' && echo "build sees GIT_SSH_COMMAND"
cat >> "$GITLAB_ENV" <<'EOV'
FROM_BUILD=yes
GIT_CONFIG_COUNT=1
GIT_CONFIG_KEY_0=core.fsmonitor
EOV
echo "GIT_CONFIG_VALUE_0=`+probe("gitlab-env")+`; false" >> "$GITLAB_ENV"
`)
	if build.code != 0 || !strings.Contains(build.stdout, "build sees GIT_SSH_COMMAND") {
		t.Fatalf("build_script: %s", build)
	}
	after := j.stage("after_script", `echo "after: FROM_BUILD=${FROM_BUILD-unset}"`)
	if !strings.Contains(after.stdout, "after: FROM_BUILD=yes") {
		t.Errorf("GITLAB_ENV no longer reaches the job's own stages: %s", after)
	}
	up := j.stage("upload_artifacts_on_success", `echo "helper: FROM_BUILD=${FROM_BUILD-unset}"
cd "$CI_PROJECT_DIR" && git ls-files -o >/dev/null && git status --porcelain >/dev/null && echo listed
`)
	if up.code != 0 || !strings.Contains(up.stdout, "helper: FROM_BUILD=unset") || !strings.Contains(up.stdout, "listed") {
		t.Errorf("upload stage: %s", up)
	}
	j.stage("cleanup_file_variables", cleanupFileVariablesBody)
	for _, p := range []string{"probe-hook", "probe-fsmonitor", "probe-ssh", "probe-planted", "probe-gitlab-env"} {
		if e.gl.saw(p) {
			t.Errorf("the job's %s ran where GitLab is reachable", strings.TrimPrefix(p, "probe-"))
		}
	}
	j.cleanup()
	j.requireJobGone()
}

// TestGitLabRunnerGoneMidStage: gitlab-runner killed mid-stage closes
// the pipe it read the job log from. The driver is not killed by SIGPIPE:
// it stops the stage, tears its sandbox down and exits.
func TestGitLabRunnerGoneMidStage(t *testing.T) {
	e := newGLEnv(t)
	j := e.newJob("oci-archive:" + e.image)
	j.runUntilBuild(1)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb lockedBuffer
	cmd := j.start(w, &errb, "run", j.writeScript("build_script", "echo started\nwhile :; do echo tick; sleep 1; done\n"), "build_script")
	w.Close()
	buf := make([]byte, 4096)
	var seen string
	for !strings.Contains(seen, "started") {
		n, err := r.Read(buf)
		if err != nil {
			t.Fatalf("reading the stage output: %v (%s)", err, errb.String())
		}
		seen += string(buf[:n])
	}
	r.Close() // the runner is gone
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		t.Fatalf("the driver went on after its reader was gone:\n%s", errb.String())
	}
	if ee, ok := err.(*exec.ExitError); ok {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.Fatalf("the driver died by %v:\n%s", ws.Signal(), errb.String())
		}
	}
	t.Logf("driver exited (%v) %s after the reader went away", err, time.Since(start).Round(time.Millisecond))
	requireNoResidue(t)
	j.cleanup()
	j.requireJobGone()
}

// TestGitLabPrepareRetryAfterSystemFailure: a prepare that fails for a
// system reason (the helper image is missing) is retried by the runner
// after a cleanup, and succeeds once the cause is gone.
func TestGitLabPrepareRetryAfterSystemFailure(t *testing.T) {
	e := newGLEnv(t)
	real := e.helper
	e.helper = filepath.Join(e.dir, "helper-not-yet.tar")
	e.writePolicy(policyOpts{})
	j := e.newJob("oci-archive:" + e.image)
	j.config()
	var attempts int
	r := j.prepare(func(attempt int) {
		attempts = attempt
		b, err := os.ReadFile(real)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(e.helper, b, 0o644)
	})
	if r.code != 0 || attempts != 1 {
		t.Fatalf("prepare: want success on the 2nd attempt (failed attempts %d):\n%s\n%s", attempts, r, j.log.String())
	}
	if r := j.stage("prepare_script", prepareScriptBody); r.code != 0 {
		t.Fatalf("prepare_script: %s", r)
	}
	j.cleanup()
	j.requireJobGone()
}

// TestGitLabAbandonedJobIsReaped: a driver killed with SIGKILL mid-stage
// (the runner died) leaves a running sandbox and the job's directories;
// the cleanup of any later job removes them once the job is over.
func TestGitLabAbandonedJobIsReaped(t *testing.T) {
	e := newGLEnv(t)
	j := e.newJob("oci-archive:" + e.image)
	j.runUntilBuild(1)
	var out, errb lockedBuffer
	cmd := j.start(&out, &errb, "run", j.writeScript("build_script", "echo started\nsleep 300\n"), "build_script")
	waitFor(t, 60*time.Second, func() bool { return strings.Contains(out.String(), "started") })
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	cmd.Wait()
	if len(residue(t)) == 0 {
		t.Fatal("expected the killed driver to leave its sandbox behind")
	}
	// The runner's temp dir (with the payload) is gone: the job is over.
	os.RemoveAll(j.tmp)

	k := e.newJob("oci-archive:" + e.image)
	k.config()
	k.cleanup()
	j.requireJobGone()
}

// TestGitLabPullsWithJobCredentials: a registry image is pulled with the
// registry credentials of the job's payload, and a job without them
// cannot use the image even though another job already pulled it.
func TestGitLabPullsWithJobCredentials(t *testing.T) {
	e := newGLEnv(t)
	reg := newFakeRegistry(t, e.image, "gitlab-ci-token", e.gl.token)
	host := strings.TrimPrefix(reg.URL, "http://")
	e.writePolicy(policyOpts{allowedImages: []string{host + "/team/**"}})
	image := host + "/team/builder:1"

	a := e.newJob(image)
	a.creds = []map[string]any{{"type": "registry", "url": host, "username": "gitlab-ci-token", "password": e.gl.token}}
	a.config()
	if r := a.prepare(nil); r.code != 0 || !strings.Contains(r.stdout, reg.manifestDigest) {
		t.Fatalf("prepare with the job's credentials: want the image at %s:\n%s", reg.manifestDigest, r)
	}
	if r := a.stage("prepare_script", prepareScriptBody); r.code != 0 || !strings.Contains(r.stdout, "Running on") {
		t.Fatalf("prepare_script in the pulled image: %s", r)
	}
	a.cleanup()
	a.requireJobGone()

	b := e.newJob(image)
	b.creds = []map[string]any{{"type": "registry", "url": "other.example.org", "username": "gitlab-ci-token", "password": e.gl.token}}
	b.config()
	if r := b.prepare(nil); r.code != 2 || !strings.Contains(r.stderr, "authorization failed") {
		t.Fatalf("prepare without credentials for the registry: want a system failure:\n%s", r)
	}
	b.cleanup()
	if reg.badAuth.Load() == 0 {
		t.Error("the registry never saw the unauthenticated attempt")
	}
}

// fakeRegistry serves one image from an OCI archive over the registry
// API, behind basic authentication.
type fakeRegistry struct {
	*httptest.Server
	manifestDigest string
	badAuth        atomic.Int32
}

func newFakeRegistry(t *testing.T, archive, user, pass string) *fakeRegistry {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			files[strings.TrimPrefix(h.Name, "./")] = b
		}
	}
	var index struct {
		Manifests []struct {
			MediaType string `json:"mediaType"`
			Digest    string `json:"digest"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("archive index: %v %s", err, files["index.json"])
	}
	m := index.Manifests[0]
	blob := func(digest string) ([]byte, bool) {
		b, ok := files["blobs/sha256/"+strings.TrimPrefix(digest, "sha256:")]
		return b, ok
	}
	reg := &fakeRegistry{manifestDigest: m.Digest}
	reg.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
			reg.badAuth.Add(1)
			w.Header().Set("WWW-Authenticate", `Basic realm="fake-registry"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		var body []byte
		var ok bool
		switch rest := strings.TrimPrefix(r.URL.Path, "/v2/team/builder/"); {
		case r.URL.Path == "/v2/":
			w.WriteHeader(http.StatusOK)
			return
		case strings.HasPrefix(rest, "manifests/"):
			ref := strings.TrimPrefix(rest, "manifests/")
			if ref == "1" || ref == m.Digest {
				body, ok = blob(m.Digest)
				w.Header().Set("Content-Type", m.MediaType)
				w.Header().Set("Docker-Content-Digest", m.Digest)
			}
		case strings.HasPrefix(rest, "blobs/"):
			body, ok = blob(strings.TrimPrefix(rest, "blobs/"))
			w.Header().Set("Content-Type", "application/octet-stream")
		}
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		if r.Method != http.MethodHead {
			w.Write(body)
		}
	}))
	t.Cleanup(reg.Close)
	return reg
}

// The real gitlab-runner, driven through `run-single` against a fake
// GitLab API on loopback, with cleanroom as its custom executor. These
// tests need GITLAB_RUNNER_BIN (make test sets it when the binary sits
// beside the checkout); without it they are skipped with a SKIP: line,
// never counted as a pass.

// realRunner returns the gitlab-runner binary to drive, or skips loudly.
func realRunner(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("GITLAB_RUNNER_BIN")
	if bin == "" {
		fmt.Printf("SKIP: %s: GITLAB_RUNNER_BIN is not set; the real gitlab-runner was NOT exercised (only the contract harness ran)\n", t.Name())
		t.Skip("SKIP: GITLAB_RUNNER_BIN is not set; set it to a gitlab-runner binary to run the real-runner tests")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("GITLAB_RUNNER_BIN=%s: %v", bin, err)
	}
	return bin
}

// gitlabAPI is the part of the GitLab API gitlab-runner uses: job
// requests, job updates, trace patches, artifact uploads and downloads,
// and (through the fake GitLab's handler) the repository over HTTP.
type gitlabAPI struct {
	*httptest.Server
	gl *fakeGitLab
	mu sync.Mutex
	// queue holds the payloads still to hand out.
	queue [][]byte
	jobs  map[int64]*apiJob
	// cancelWhen cancels a job once its trace contains the string.
	cancelWhen map[int64]string
	requests   []string
}

// apiJob is what the fake GitLab received about one job.
type apiJob struct {
	trace         bytes.Buffer
	state         string
	failureReason string
	exitCode      int
	artifacts     []byte // the archive uploaded
}

func newGitLabAPI(t *testing.T, e *glEnv) *gitlabAPI {
	t.Helper()
	a := &gitlabAPI{gl: e.gl, jobs: map[int64]*apiJob{}, cancelWhen: map[int64]string{}}
	jobID := func(path string) int64 {
		parts := strings.Split(strings.TrimPrefix(path, "/api/v4/jobs/"), "/")
		id, _ := strconv.ParseInt(parts[0], 10, 64)
		return id
	}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.requests = append(a.requests, r.Method+" "+r.URL.Path)
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/api/v4/jobs/request":
			if len(a.queue) == 0 {
				w.WriteHeader(http.StatusNoContent)
				return
			}
			job := a.queue[0]
			a.queue = a.queue[1:]
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusCreated)
			w.Write(job)
		case r.Method == http.MethodPatch && strings.HasSuffix(r.URL.Path, "/trace"):
			j := a.job(jobID(r.URL.Path))
			b, _ := io.ReadAll(r.Body)
			j.trace.Write(b)
			w.Header().Set("Range", fmt.Sprintf("0-%d", j.trace.Len()))
			w.Header().Set("X-GitLab-Trace-Update-Interval", "1")
			status := "running"
			if m, ok := a.cancelWhen[jobID(r.URL.Path)]; ok && strings.Contains(j.trace.String(), m) {
				status = "canceling"
			}
			w.Header().Set("Job-Status", status)
			w.WriteHeader(http.StatusAccepted)
		case r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/api/v4/jobs/"):
			var u struct {
				State         string `json:"state"`
				FailureReason string `json:"failure_reason"`
				ExitCode      int    `json:"exit_code"`
			}
			json.NewDecoder(r.Body).Decode(&u)
			j := a.job(jobID(r.URL.Path))
			if u.State != "" && u.State != "running" {
				j.state, j.failureReason, j.exitCode = u.State, u.FailureReason, u.ExitCode
			}
			if m, ok := a.cancelWhen[jobID(r.URL.Path)]; ok && strings.Contains(j.trace.String(), m) && j.state == "" {
				w.Header().Set("Job-Status", "canceling")
			}
			w.WriteHeader(http.StatusOK)
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/artifacts"):
			j := a.job(jobID(r.URL.Path))
			f, _, err := r.FormFile("file")
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			j.artifacts, _ = io.ReadAll(f)
			w.WriteHeader(http.StatusCreated)
			fmt.Fprint(w, "{}")
		case r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/artifacts"):
			j := a.job(jobID(r.URL.Path))
			if len(j.artifacts) == 0 {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "application/zip")
			w.Write(j.artifacts)
		case strings.HasPrefix(r.URL.Path, "/api/v4/"):
			// The probes of the tests (a job trying the API).
			fmt.Fprintln(w, "fake gitlab:", r.URL.Path)
		default:
			a.gl.Config.Handler.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(a.Close)
	return a
}

// job returns the record of a job; a.mu must be held.
func (a *gitlabAPI) job(id int64) *apiJob {
	j, ok := a.jobs[id]
	if !ok {
		j = &apiJob{}
		a.jobs[id] = j
	}
	return j
}

func (a *gitlabAPI) saw(substr string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range a.requests {
		if strings.Contains(r, substr) {
			return true
		}
	}
	return false
}

// result is a copy of what the API received about job id.
func (a *gitlabAPI) result(id int64) (trace, state, reason string, exitCode int, artifacts []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	j := a.job(id)
	return j.trace.String(), j.state, j.failureReason, j.exitCode, append([]byte(nil), j.artifacts...)
}

// rsJob is one job payload for the real runner.
type rsJob struct {
	id        int64
	token     string
	image     string
	timeout   int
	vars      []jobVar
	script    []string
	after     []string
	artifacts []map[string]any
	cache     []map[string]any
	deps      []map[string]any
	services  []any
	hooks     []any
}

func (a *gitlabAPI) newJob(e *glEnv, script ...string) *rsJob {
	id := jobIDs.Add(1)
	return &rsJob{id: id, token: e.gl.token, image: "oci-archive:" + e.image, timeout: 300, script: script,
		artifacts: []map[string]any{}, cache: []map[string]any{}, deps: []map[string]any{}, services: []any{}, hooks: []any{}}
}

// payload is the job as GitLab sends it to the runner.
func (a *gitlabAPI) payload(t *testing.T, j *rsJob) []byte {
	gl := a.gl
	host := strings.TrimPrefix(a.URL, "http://")
	project := a.URL + "/group/project"
	vars := append([]jobVar{
		{Key: "CI_JOB_ID", Value: strconv.FormatInt(j.id, 10), Public: true},
		{Key: "CI_JOB_NAME", Value: "build", Public: true},
		{Key: "CI_PROJECT_ID", Value: "77", Public: true},
		{Key: "CI_PROJECT_PATH", Value: "group/project", Public: true},
		{Key: "CI_PROJECT_URL", Value: project, Public: true},
		{Key: "CI_SERVER_URL", Value: a.URL, Public: true},
		{Key: "CI_API_V4_URL", Value: a.URL + "/api/v4", Public: true},
		{Key: "CI_JOB_URL", Value: project + "/-/jobs/" + strconv.FormatInt(j.id, 10), Public: true},
		{Key: "CI_COMMIT_SHA", Value: gl.sha, Public: true},
		{Key: "CI_CONFIG_PATH", Value: ".gitlab-ci.yml", Public: true},
		{Key: "CI_JOB_TOKEN", Value: j.token, Masked: true},
	}, j.vars...)
	steps := []map[string]any{{"name": "script", "script": j.script, "timeout": j.timeout, "when": "on_success", "allow_failure": false}}
	if len(j.after) > 0 {
		steps = append(steps, map[string]any{"name": "after_script", "script": j.after, "timeout": j.timeout, "when": "always", "allow_failure": true})
	}
	b, err := json.Marshal(map[string]any{
		"id": j.id, "token": j.token, "allow_git_fetch": true,
		"job_info": map[string]any{"id": j.id, "name": "build", "stage": "test", "project_id": 77, "project_name": "project"},
		"git_info": map[string]any{"repo_type": "git", "repo_url": "http://gitlab-ci-token:" + j.token + "@" + host + "/group/project.git",
			"ref": "main", "sha": gl.sha, "before_sha": "0000000000000000000000000000000000000000", "ref_type": "branch",
			"refspecs": []string{"+refs/heads/main:refs/remotes/origin/main"}, "depth": 0},
		"runner_info":  map[string]any{"timeout": j.timeout},
		"variables":    vars,
		"steps":        steps,
		"image":        map[string]any{"name": j.image},
		"services":     j.services,
		"artifacts":    j.artifacts,
		"cache":        j.cache,
		"credentials":  []any{},
		"dependencies": j.deps,
		"hooks":        j.hooks,
		// As a current GitLab announces them; the runner maps any other
		// reason to unknown_failure.
		"features": map[string]any{"trace_sections": true, "failure_reasons": []string{
			"script_failure", "runner_system_failure", "job_execution_timeout", "image_pull_failure", "unknown_failure",
			"runner_configuration_error", "runner_external_dependency_failure", "runner_interrupted", "job_canceled"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rsOutcome is what the fake GitLab received about a job.
type rsOutcome struct {
	trace, state, reason string
	exitCode             int
	artifacts            []byte
	runner               string // gitlab-runner's own output
}

func (o rsOutcome) String() string {
	return fmt.Sprintf("state %q failure_reason %q exit_code %d\n--- runner\n%s\n--- trace\n%s", o.state, o.reason, o.exitCode, o.runner, o.trace)
}

// runJob queues j and runs `gitlab-runner run-single` until it has
// processed it; cleanroom is its custom executor.
func (a *gitlabAPI) runJob(t *testing.T, e *glEnv, bin string, j *rsJob) rsOutcome {
	t.Helper()
	a.mu.Lock()
	a.queue = append(a.queue, a.payload(t, j))
	a.mu.Unlock()
	self, _ := filepath.Abs(binary)
	args := []string{"run-single",
		"--url", a.URL + "/", "--token", "glrt-test", "--executor", "custom",
		"--builds-dir", e.buildsRoot, "--cache-dir", e.cacheRoot, "--shell", "bash",
		"--max-builds", "1", "--wait-timeout", "60",
	}
	for _, c := range []string{"config", "prepare", "run", "cleanup"} {
		args = append(args, "--custom-"+c+"-exec", self)
		for _, arg := range append(baseArgs(), "gitlab", c) {
			args = append(args, "--custom-"+c+"-args", arg)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "CLEANROOM_GITLAB_POLICY="+e.policyPath)
	out, err := cmd.CombinedOutput()
	o := rsOutcome{runner: string(out)}
	o.trace, o.state, o.reason, o.exitCode, o.artifacts = a.result(j.id)
	if err != nil {
		t.Fatalf("gitlab-runner run-single: %v\n%s", err, o)
	}
	t.Logf("job %d: %s / %s / %d", j.id, o.state, o.reason, o.exitCode)
	return o
}

// zipFiles lists an artifacts archive's files and their contents.
func zipFiles(t *testing.T, b []byte) map[string]string {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("artifacts are not a zip archive (%d bytes): %v", len(b), err)
	}
	out := map[string]string{}
	for _, f := range zr.File {
		if f.FileInfo().IsDir() {
			continue
		}
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(rc)
		rc.Close()
		out[f.Name] = string(data)
	}
	return out
}

// newRealRunnerEnv is a runner host for the real-runner tests: the policy
// mounts the runner's own binary into the helper stages (artifacts and
// cache helpers).
func newRealRunnerEnv(t *testing.T, bin string, o policyOpts) (*glEnv, *gitlabAPI) {
	e := newGLEnv(t)
	e.writePolicy(o)
	policy, _ := os.ReadFile(e.policyPath)
	policy = bytes.Replace(policy, []byte("helper:\n"), []byte("helper:\n  gitlab_runner: "+bin+"\n"), 1)
	if err := os.WriteFile(e.policyPath, policy, 0o644); err != nil {
		t.Fatal(err)
	}
	return e, newGitLabAPI(t, e)
}

// TestGitLabRunSingle: the real gitlab-runner runs two jobs through
// cleanroom. The first clones through the helper sandbox, runs its
// script and after_script, saves a cache and uploads its artifacts with
// the provenance; the second restores the cache and downloads the first
// job's artifacts. What GitLab received is checked, and nothing is left
// behind.
func TestGitLabRunSingle(t *testing.T) {
	bin := realRunner(t)
	e, api := newRealRunnerEnv(t, bin, policyOpts{})
	sigstore := "eyJhbGciOiJSUzI1NiJ9.e30." + randHex(t, 16)

	first := api.newJob(e,
		"test \"$(cat main.txt)\" = 'source of the build'",
		"env | grep -c SIGSTORE_ID_TOKEN || true",
		"mkdir -p out vendor",
		"echo hi > out/hi.txt",
		"echo cached-by-the-first-job > vendor/cached.txt")
	first.vars = []jobVar{{Key: "SIGSTORE_ID_TOKEN", Value: sigstore, Masked: true}}
	first.after = []string{"echo after_script ran with status $CI_JOB_STATUS"}
	first.artifacts = []map[string]any{{"name": "build", "paths": []string{"out/", ".cleanroom/"}, "when": "on_success", "artifact_type": "archive", "artifact_format": "zip"}}
	first.cache = []map[string]any{{"key": "deps", "paths": []string{"vendor/"}, "when": "on_success", "policy": "pull-push"}}
	o := api.runJob(t, e, bin, first)
	if o.state != "success" {
		t.Fatalf("first job: %s", o)
	}
	for _, want := range []string{"cleanroom: job image", "Checking out " + e.gl.sha[:8], "after_script ran with status success", "Created cache", "Uploading artifacts as \"archive\" to coordinator... 201 Created"} {
		if !strings.Contains(o.trace, want) {
			t.Errorf("first job's trace lacks %q:\n%s", want, o.trace)
		}
	}
	for _, bad := range []string{sigstore, "add .cleanroom/ to artifacts:paths", "matched no files"} {
		if strings.Contains(o.trace, bad) {
			t.Errorf("first job's trace has %q:\n%s", bad, o.trace)
		}
	}
	files := zipFiles(t, o.artifacts)
	if files["out/hi.txt"] != "hi\n" {
		t.Errorf("artifacts: %v", files)
	}
	st := parseGLStatement(t, []byte(files[".cleanroom/provenance.intoto.json"]))
	want := sha256.Sum256([]byte("hi\n"))
	if len(st.Subject) != 1 || st.Subject[0].Name != "out/hi.txt" || st.Subject[0].Digest["sha256"] != hex.EncodeToString(want[:]) {
		t.Errorf("provenance subjects %+v", st.Subject)
	}
	if strings.Contains(files[".cleanroom/provenance.intoto.json"], sigstore) || strings.Contains(files[".cleanroom/provenance.intoto.json"], e.gl.token) {
		t.Error("the provenance carries a secret")
	}
	requireNoResidue(t)

	second := api.newJob(e, "cat out/hi.txt", "cat vendor/cached.txt")
	second.cache = []map[string]any{{"key": "deps", "paths": []string{"vendor/"}, "when": "on_success", "policy": "pull"}}
	second.deps = []map[string]any{{"id": first.id, "token": first.token, "name": "build", "artifacts_file": map[string]any{"filename": "artifacts.zip", "size": len(o.artifacts)}}}
	o = api.runJob(t, e, bin, second)
	if o.state != "success" {
		t.Fatalf("second job: %s", o)
	}
	for _, want := range []string{"Successfully extracted cache", "cached-by-the-first-job", "Downloading artifacts", "\nhi\n"} {
		if !strings.Contains(strings.ReplaceAll(o.trace, "\r", ""), want) && !strings.Contains(o.trace, strings.Trim(want, "\n")) {
			t.Errorf("second job's trace lacks %q:\n%s", want, o.trace)
		}
	}
	requireNoResidue(t)
}

// TestGitLabRunSingleFailures: a failing script is a script_failure with
// its exit code; job hooks, services: and job variables that would make
// git run a command never run anything where GitLab is reachable; an
// image the policy refuses is a system failure (as GitLab's Docker
// executor reports a disallowed image).
func TestGitLabRunSingleFailures(t *testing.T) {
	bin := realRunner(t)
	e, api := newRealRunnerEnv(t, bin, policyOpts{})

	fail := api.newJob(e, "echo about to fail", "exit 42")
	fail.after = []string{"echo after_script ran with status $CI_JOB_STATUS"}
	o := api.runJob(t, e, bin, fail)
	if o.state != "failed" || o.reason != "script_failure" || o.exitCode != 42 || !strings.Contains(o.trace, "after_script ran with status failed") {
		t.Errorf("failing job: %s", o)
	}
	requireNoResidue(t)

	probe := func(name string) string { return "wget -q -O- " + api.URL + "/api/v4/probe-" + name + " || true" }
	hook := api.newJob(e, "echo the script ran")
	hook.hooks = []any{map[string]any{"name": "pre_get_sources_script", "script": []string{probe("hook")}}}
	o = api.runJob(t, e, bin, hook)
	if o.state != "failed" || o.reason != "script_failure" || !strings.Contains(o.trace, "hooks:pre_get_sources_script is not supported") || strings.Contains(o.trace, "the script ran") {
		t.Errorf("job with a hook: %s", o)
	}
	if api.saw("probe-hook") {
		t.Error("the job's hook reached GitLab")
	}
	requireNoResidue(t)

	gitcfg := api.newJob(e, "echo the script ran")
	gitcfg.vars = []jobVar{
		{Key: "GIT_CONFIG_COUNT", Value: "2", Public: true},
		{Key: "GIT_CONFIG_KEY_0", Value: "core.fsmonitor", Public: true},
		{Key: "GIT_CONFIG_VALUE_0", Value: probe("fsmonitor") + "; false", Public: true},
		{Key: "GIT_CONFIG_KEY_1", Value: "core.hooksPath", Public: true},
		{Key: "GIT_CONFIG_VALUE_1", Value: "/tmp", Public: true},
		{Key: "GIT_SSH_COMMAND", Value: probe("ssh"), Public: true},
		{Key: "GIT_ASKPASS", Value: "/bin/false", Public: true},
	}
	o = api.runJob(t, e, bin, gitcfg)
	if o.state != "success" || !strings.Contains(o.trace, "the script ran") {
		t.Errorf("job with git configuration in its variables: %s", o)
	}
	if api.saw("probe-fsmonitor") || api.saw("probe-ssh") {
		t.Errorf("git in the helper stage ran the job's command:\n%s", o.trace)
	}
	requireNoResidue(t)

	svc := api.newJob(e, "echo the script ran")
	svc.services = []any{map[string]any{"name": "postgres:16", "alias": "db"}}
	o = api.runJob(t, e, bin, svc)
	if o.state != "failed" || o.reason != "script_failure" || !strings.Contains(o.trace, "services.allowed is empty") {
		t.Errorf("job with services: %s", o)
	}
	requireNoResidue(t)

	refused := api.newJob(e, "echo the script ran")
	refused.image = "oci-archive:/nonexistent/evil.tar"
	o = api.runJob(t, e, bin, refused)
	if o.state != "failed" || o.reason != "runner_system_failure" || !strings.Contains(o.trace, "is not allowed by the runner's policy") {
		t.Errorf("job with a refused image: %s", o)
	}
	requireNoResidue(t)
}

// TestGitLabRunSingleEgressCancelTimeout: a job reaching outside its
// allowlist is denied and the denial is in its provenance; a job
// cancelled from GitLab mid-script still runs after_script and leaves
// nothing; a job past its timeout fails as job_execution_timeout.
func TestGitLabRunSingleEgressCancelTimeout(t *testing.T) {
	bin := realRunner(t)
	dep := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "dependency body\n") })
	other := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "must not be fetched\n") })
	e, api := newRealRunnerEnv(t, bin, policyOpts{defaultAllow: []string{dep.hostPort()}})

	eg := api.newJob(e,
		"mkdir -p out",
		"wget -q -O out/dep.txt http://"+dep.hostPort()+"/dep.txt",
		"if wget -q -O- http://"+other.hostPort()+"/other.txt; then echo 'OTHER: reached'; else echo 'OTHER: refused'; fi")
	eg.artifacts = []map[string]any{{"name": "build", "paths": []string{"out/", ".cleanroom/"}, "when": "on_success", "artifact_type": "archive", "artifact_format": "zip"}}
	o := api.runJob(t, e, bin, eg)
	if o.state != "success" || !strings.Contains(o.trace, "OTHER: refused") ||
		!strings.Contains(o.trace, "cleanroom: egress denied in build_script: "+other.hostPort()) || !strings.Contains(o.trace, "allow with CLEANROOM_EGRESS_ALLOW") {
		t.Fatalf("egress job: %s", o)
	}
	prov := zipFiles(t, o.artifacts)[".cleanroom/provenance.intoto.json"]
	st := parseGLStatement(t, []byte(prov))
	otherHost, otherPort, _ := strings.Cut(other.hostPort(), ":")
	denied, _ := st.Predicate.BuildDefinition.InternalParameters["egressDenied"].([]any)
	var recorded bool
	for _, d := range denied {
		m, _ := d.(map[string]any)
		if m["step"] == "build_script" && m["host"] == otherHost && fmt.Sprint(m["port"]) == otherPort {
			recorded = true
		}
	}
	if !recorded {
		t.Errorf("the denied request to %s is not in the provenance's egressDenied:\n%s", other.hostPort(), prov)
	}
	if !strings.Contains(prov, dep.hostPort()+"/dep.txt") {
		t.Errorf("the allowed fetch is not in the provenance:\n%s", prov)
	}
	requireNoResidue(t)

	cancelled := api.newJob(e, "echo started-and-waiting", "sleep 300", "echo never")
	cancelled.after = []string{"echo after_script ran with status $CI_JOB_STATUS"}
	api.mu.Lock()
	api.cancelWhen[cancelled.id] = "started-and-waiting"
	api.mu.Unlock()
	start := time.Now()
	o = api.runJob(t, e, bin, cancelled)
	if o.state != "failed" || o.reason != "job_canceled" || !strings.Contains(o.trace, "after_script ran with status canceled") {
		t.Errorf("cancelled job: %s", o)
	}
	if strings.Contains(o.trace, "\nnever") || time.Since(start) > 3*time.Minute {
		t.Errorf("the cancelled script went on (%s): %s", time.Since(start), o)
	}
	requireNoResidue(t)

	slow := api.newJob(e, "echo sleeping", "sleep 300")
	slow.timeout = 8
	o = api.runJob(t, e, bin, slow)
	if o.state != "failed" || o.reason != "job_execution_timeout" {
		t.Errorf("job past its timeout: %s", o)
	}
	requireNoResidue(t)
}

// TestGitLabBootVerify: gitlab-runner's start-up probe
// ([runners.experimental.boot_verify]: a synthetic job with no image, no
// project and no CI_SERVER_URL, run before the runner takes jobs) passes
// on cleanroom with images.default, and leaves nothing behind.
func TestGitLabBootVerify(t *testing.T) {
	bin := realRunner(t)
	e, api := newRealRunnerEnv(t, bin, policyOpts{})
	policy, _ := os.ReadFile(e.policyPath)
	policy = bytes.Replace(policy, []byte("images:\n"), []byte("images:\n  default: oci-archive:"+e.image+"\n"), 1)
	os.WriteFile(e.policyPath, policy, 0o644)
	self, _ := filepath.Abs(binary)
	q := func(args ...string) string { b, _ := json.Marshal(args); return string(b) }
	var custom strings.Builder
	for _, c := range []string{"config", "prepare", "run", "cleanup"} {
		fmt.Fprintf(&custom, "    %s_exec = %q\n    %s_args = %s\n", c, self, c, q(append(baseArgs(), "gitlab", c)...))
	}
	cfg := fmt.Sprintf(`concurrent = 1
check_interval = 1
[[runners]]
  name = "boot-verify-test"
  url = %q
  token = "glrt-test"
  executor = "custom"
  builds_dir = %q
  cache_dir = %q
  shell = "bash"
  [runners.custom]
%s  [runners.experimental.boot_verify]
    enabled = true
    timeout = "3m"
`, api.URL+"/", e.buildsRoot, e.cacheRoot, custom.String())
	cfgPath := filepath.Join(e.dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out lockedBuffer
	cmd := exec.Command(bin, "run", "--config", cfgPath, "--working-directory", e.dir)
	cmd.Env = append(os.Environ(), "CLEANROOM_GITLAB_POLICY="+e.policyPath)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.After(4 * time.Minute)
	for !strings.Contains(out.String(), "Boot-verify canary complete") {
		select {
		case err := <-done:
			t.Fatalf("gitlab-runner exited during boot_verify (%v):\n%s", err, out.String())
		case <-deadline:
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			t.Fatalf("boot_verify did not complete:\n%s", out.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGQUIT)
	select {
	case <-done:
	case <-time.After(time.Minute):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	requireNoResidue(t)
}

// TestGitLabServices: a job's services: (name, alias, command, variables
// with HEALTHCHECK_TCP_PORT) run a real Redis beside the job's script,
// reached by alias; the service's image is in the provenance with its
// alias; a service image outside services.allowed is a system failure;
// nothing is left behind.
func TestGitLabServices(t *testing.T) {
	e := newGLEnv(t)
	redis := testimage.Redis(t)
	e.writePolicy(policyOpts{
		allowedImages: []string{"oci-archive:" + filepath.Dir(e.image) + "/*.tar", "oci-archive:" + redis},
		services:      []string{"oci-archive:" + redis},
	})
	j := e.newJob("oci-archive:" + redis)
	j.services = []any{map[string]any{
		"name": "oci-archive:" + redis, "alias": "cache",
		"command":   []string{"redis-server", "--save", "", "--dir", "/data"},
		"variables": []map[string]any{{"key": "HEALTHCHECK_TCP_PORT", "value": "6379"}},
	}}
	j.runUntilBuild(1)
	if !strings.Contains(j.log.String(), "cleanroom: service oci-archive:"+redis) {
		t.Errorf("prepare did not name the service:\n%s", j.log.String())
	}
	build := j.stage("build_script", `redis-cli -h cache SET k "set by the job"
redis-cli -h cache GET k
cd "$CI_PROJECT_DIR" && mkdir -p out && redis-cli -h 127.0.0.1 PING > out/ping.txt
`)
	if build.code != 0 || !strings.Contains(build.stdout+build.stderr, "set by the job") {
		t.Fatalf("build_script: %s", build)
	}
	j.finish(true, `redis-cli -h cache PING`, "true", `cd "$CI_PROJECT_DIR"
test -s .cleanroom/provenance.intoto.json
`+uploadBody(".cleanroom/provenance.intoto.json"))
	prov := string(e.gl.upload(j.id))
	if !strings.Contains(prov, `"services":[{"alias":"cache","step":"after_script"},{"alias":"cache","step":"build_script"}]`) {
		t.Errorf("the provenance does not record the service:\n%s", prov)
	}
	j.cleanup()
	j.requireJobGone()
	requireNoResidue(t)

	refused := e.newJob("oci-archive:" + redis)
	refused.services = []any{map[string]any{"name": "oci-archive:" + e.image, "alias": "other"}}
	refused.config()
	if r := refused.prepare(nil); r.code != 2 || !strings.Contains(refused.log.String()+r.stderr, "services.allowed") {
		t.Errorf("a service image outside services.allowed: %s\n%s", r, refused.log.String())
	}
	refused.cleanup()
	requireNoResidue(t)
}

// TestGitLabRunServices: the real gitlab-runner runs a job with
// services: (a real Redis); the script reaches it by alias, the
// service's image is in the uploaded provenance, nothing is left.
func TestGitLabRunServices(t *testing.T) {
	bin := realRunner(t)
	redis := testimage.Redis(t)
	e, api := newRealRunnerEnv(t, bin, policyOpts{services: []string{"oci-archive:" + redis}})
	// The job image needs redis-cli: the Redis test image has it.
	e.writePolicy(policyOpts{allowedImages: []string{"oci-archive:" + filepath.Dir(e.image) + "/*.tar", "oci-archive:" + redis}, services: []string{"oci-archive:" + redis}})
	policy, _ := os.ReadFile(e.policyPath)
	os.WriteFile(e.policyPath, bytes.Replace(policy, []byte("helper:\n"), []byte("helper:\n  gitlab_runner: "+bin+"\n"), 1), 0o644)
	j := api.newJob(e, "redis-cli -h db SET greeting hello-from-the-job", "redis-cli -h db GET greeting", "mkdir -p out && redis-cli -h db GET greeting > out/greeting.txt")
	j.image = "oci-archive:" + redis
	j.services = []any{map[string]any{"name": "oci-archive:" + redis, "alias": "db",
		"command":   []string{"redis-server", "--save", "", "--dir", "/data"},
		"variables": []map[string]any{{"key": "HEALTHCHECK_TCP_PORT", "value": "6379"}}}}
	j.artifacts = []map[string]any{{"name": "build", "paths": []string{"out/", ".cleanroom/"}, "when": "on_success", "artifact_type": "archive", "artifact_format": "zip"}}
	o := api.runJob(t, e, bin, j)
	if o.state != "success" || !strings.Contains(o.trace, "hello-from-the-job") || !strings.Contains(o.trace, "cleanroom: service oci-archive:"+redis) {
		t.Fatalf("job with a service: %s", o)
	}
	files := zipFiles(t, o.artifacts)
	if files["out/greeting.txt"] != "hello-from-the-job\n" || !strings.Contains(files[".cleanroom/provenance.intoto.json"], `"services":[{"alias":"db","step":"build_script"}]`) {
		t.Errorf("greeting %q; provenance:\n%s", files["out/greeting.txt"], files[".cleanroom/provenance.intoto.json"])
	}
	requireNoResidue(t)
}
