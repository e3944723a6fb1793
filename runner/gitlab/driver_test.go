package gitlab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/internal/glob"
	"github.com/cleanroom-ci/cleanroom/runner"
	"github.com/cleanroom-ci/cleanroom/sandbox"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
	"github.com/cleanroom-ci/cleanroom/sign"
)

// fakeBackend records what the driver asks of the sandbox backend.
type fakeBackend struct {
	mu       sync.Mutex
	resolved []string
	pulled   map[string]string // ref -> user the auth gave for its host
	signals  []string
	closed   int
	pullErr  error
	removed  []string
}

func (f *fakeBackend) Resolve(_ context.Context, ref string) (sandbox.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resolved = append(f.resolved, ref)
	return sandbox.Image{Ref: ref, Name: "archive/" + ref, Digest: "sha256:" + strings.Repeat("a", 64)}, nil
}

func (f *fakeBackend) Pull(_ context.Context, ref string, auth func(string) (string, string, error)) (sandbox.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pullErr != nil {
		return sandbox.Image{}, f.pullErr
	}
	user := ""
	if auth != nil {
		host, _, _ := strings.Cut(ref, "/")
		user, _, _ = auth(host)
	}
	if f.pulled == nil {
		f.pulled = map[string]string{}
	}
	f.pulled[ref] = user
	return sandbox.Image{Ref: ref, Name: ref + "@sha256:" + strings.Repeat("b", 64), Digest: "sha256:" + strings.Repeat("b", 64)}, nil
}

func (f *fakeBackend) Run(context.Context, sandbox.Spec, io.Writer, io.Writer) (sandbox.Result, error) {
	return sandbox.Result{}, errors.New("not used: the driver runs stages through sandboxed")
}

func (f *fakeBackend) Info(context.Context) (sandbox.Info, error) {
	return sandbox.Info{Backend: "fake", Versions: map[string]string{"fake": "1"}, Capabilities: []string{"CAP_CHOWN"}, NoNewPrivs: true, ReadonlyRootfs: true}, nil
}

func (f *fakeBackend) Close() error {
	f.mu.Lock()
	f.closed++
	f.mu.Unlock()
	return nil
}

func (f *fakeBackend) Signal(_ context.Context, id string, sig syscall.Signal) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.signals = append(f.signals, fmt.Sprintf("%s:%d", id, sig))
	return nil
}

// stageRun is what a fake sandboxed call saw.
type stageRun struct {
	step   runner.SandboxedStep
	script string
}

type harness struct {
	t       *testing.T
	d       *Driver
	backend *fakeBackend
	tmp     string
	resp    map[string]any
	runs    []stageRun
	out     bytes.Buffer
	// result decides each stage's outcome.
	result func(stage string, st runner.SandboxedStep) (runner.StepResult, error)
}

const tokenValue = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJzaWdzdG9yZSJ9.dGVzdC1zaWduYXR1cmU"

func newHarness(t *testing.T) *harness {
	t.Helper()
	root := t.TempDir()
	h := &harness{t: t, backend: &fakeBackend{}, tmp: filepath.Join(root, "custom-executor1")}
	os.MkdirAll(h.tmp, 0o700)
	policy, err := ParsePolicy("p.yaml", []byte(fmt.Sprintf(`version: 1
builds_dir: %s/builds
cache_dir: %s/cache
images:
  allowed: ["registry.example.org/**", "oci-archive:/srv/images/*.tar"]
helper:
  image: oci-archive:/srv/images/helper.tar
egress:
  default: [deps.example.org]
  maximum: ["*.example.org"]
  job_may_widen: true
runner_only_variables: [VAULT_ID_TOKEN]
stop_grace: 100ms
`, root, root)))
	if err != nil {
		t.Fatal(err)
	}
	h.resp = map[string]any{
		"id":          4242,
		"token":       "job-token",
		"job_info":    map[string]any{"name": "build", "project_id": 77},
		"git_info":    map[string]any{"repo_url": "https://gitlab.example.com/group/project.git", "ref": "main", "sha": strings.Repeat("c", 40), "ref_type": "branch"},
		"runner_info": map[string]any{"timeout": 600},
		"image":       map[string]any{"name": "registry.example.org/team/builder:1"},
		"variables": []map[string]any{
			{"key": "CI_SERVER_URL", "value": "https://gitlab.example.com"},
			{"key": "CI_PROJECT_URL", "value": "https://gitlab.example.com/group/project"},
			{"key": "CI_JOB_URL", "value": "https://gitlab.example.com/group/project/-/jobs/4242"},
			{"key": "SIGSTORE_ID_TOKEN", "value": tokenValue, "masked": true},
			{"key": "VAULT_ID_TOKEN", "value": "vault-secret-value-123", "masked": true, "file": true},
			{"key": "MY_SETTING", "value": "on", "public": true},
		},
		"artifacts":   []map[string]any{{"name": "a", "paths": []string{"out/", "missing/*.bin"}, "exclude": []string{"out/**/*.log"}, "when": "on_success", "artifact_type": "archive"}},
		"credentials": []map[string]any{{"type": "registry", "url": "registry.example.org", "username": "gitlab-ci-token", "password": "job-token"}},
		"steps":       []map[string]any{{"name": "script", "script": []string{"make"}}},
	}
	h.d = &Driver{
		Policy:   policy,
		StateDir: filepath.Join(root, "state"),
		Contract: Contract{BuildFailureExitCode: 1, SystemFailureExitCode: 2, BuildExitCodeFile: filepath.Join(h.tmp, "build_exit_code"), JobResponseFile: filepath.Join(h.tmp, "response.json")},
		Getenv:   func(string) string { return "" },
		Version:  "test",
		Stdout:   &h.out,
		Open:     func(context.Context, string) (Backend, error) { return h.backend, nil },
	}
	h.d.sandboxed = func(ctx context.Context, env runner.SandboxEnv, st runner.SandboxedStep) (runner.StepResult, error) {
		var script string
		for _, m := range st.Mounts {
			if m.Destination == stageScriptPath {
				b, err := os.ReadFile(m.Source)
				if err != nil {
					t.Errorf("stage script not readable: %v", err)
				}
				script = string(b)
			}
		}
		h.runs = append(h.runs, stageRun{step: st, script: script})
		if h.result != nil {
			return h.result(st.Name, st)
		}
		return runner.StepResult{Name: st.Name, Status: "ok"}, nil
	}
	h.writeResponse()
	return h
}

func (h *harness) writeResponse() {
	b, _ := json.Marshal(h.resp)
	if err := os.WriteFile(h.d.Contract.JobResponseFile, b, 0o600); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) script(stage string) string {
	p := filepath.Join(h.tmp, "script-"+stage)
	body := fmt.Sprintf("export SIGSTORE_ID_TOKEN=%s\nmkdir -p \"/b/x.tmp\"\nprintf '%%s' vault-secret-value-123 > \"/b/x.tmp/VAULT_ID_TOKEN\"\nexport VAULT_ID_TOKEN=\"/b/x.tmp/VAULT_ID_TOKEN\"\nexport MY_SETTING=on\necho %s\n", tokenValue, stage)
	s := "#!/usr/bin/env bash\n\ntrap 'exit 1' TERM\n\nset -o errexit\n(trap 'exit 1' TERM; eval " + singleQuote(body) + ") < /dev/null\nexit 0\n"
	os.WriteFile(p, []byte(s), 0o700)
	return p
}

func (h *harness) run(stage string) error {
	return h.d.Run(context.Background(), h.script(stage), stage, nil)
}

func (h *harness) state() *JobState {
	h.t.Helper()
	j, err := openJob(h.d.StateDir, 4242, false, time.Second)
	if err != nil {
		h.t.Fatal(err)
	}
	defer j.close()
	st, err := j.readState()
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

func TestConfig(t *testing.T) {
	h := newHarness(t)
	out, err := h.d.Config()
	if err != nil {
		t.Fatal(err)
	}
	if out.BuildsDir != filepath.Join(h.d.Policy.BuildsDir, "4242") || out.CacheDir != filepath.Join(h.d.Policy.CacheDir, "77") ||
		out.BuildsDirIsShared || out.Driver.Name != "cleanroom" || out.JobEnv == nil {
		t.Fatalf("%+v", out)
	}
	b, _ := json.Marshal(out)
	if !strings.Contains(string(b), `"builds_dir_is_shared":false`) {
		t.Errorf("builds_dir_is_shared must be present: %s", b)
	}
}

func TestPrepare(t *testing.T) {
	h := newHarness(t)
	h.resp["variables"] = append(h.resp["variables"].([]map[string]any), map[string]any{"key": EgressRequestVariable, "value": "api.example.org"})
	h.writeResponse()
	// The CUSTOM_ENV_ copies follow variable precedence (a job can set
	// them); decisions come from the payload only.
	h.d.Getenv = func(k string) string {
		switch k {
		case "CUSTOM_ENV_CI_JOB_IMAGE":
			return "evil.example.com/x:1"
		case "CUSTOM_ENV_" + EgressRequestVariable:
			return "evil.example.com"
		case "CUSTOM_ENV_CI_SERVER_URL":
			return "https://evil.example.com"
		case "CUSTOM_ENV_CI_PROJECT_DIR":
			return "/etc"
		}
		return ""
	}
	if err := h.d.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := h.state()
	if st.Image.Digest != "sha256:"+strings.Repeat("b", 64) || st.Helper.Ref != "oci-archive:/srv/images/helper.tar" {
		t.Errorf("images %+v %+v", st.Image, st.Helper)
	}
	if !slices.Equal(st.Allow, []string{"deps.example.org", "api.example.org"}) || !slices.Equal(st.HelperAllow, []string{"gitlab.example.com:443"}) {
		t.Errorf("allow %v helper %v", st.Allow, st.HelperAllow)
	}
	if st.ProjectDir != filepath.Join(st.BuildsDir, "group/project") {
		t.Errorf("project dir %s", st.ProjectDir)
	}
	// The job's registry login went to the job image's registry only.
	if h.backend.pulled["registry.example.org/team/builder:1"] != "gitlab-ci-token" || !slices.Contains(h.backend.resolved, "oci-archive:/srv/images/helper.tar") {
		t.Errorf("pulled %v resolved %v", h.backend.pulled, h.backend.resolved)
	}
	if fi, err := os.Stat(st.BuildsDir); err != nil || fi.Mode().Perm() != 0o777 {
		t.Errorf("builds dir: %v %v", fi, err)
	}
	if fi, err := os.Stat(h.d.Policy.BuildsDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("builds root must be closed to host users: %v %v", fi, err)
	}
	// Idempotent: a retry starts over, leaving no record of the first.
	os.WriteFile(filepath.Join(st.BuildsDir, "leftover"), nil, 0o644)
	if err := h.d.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(st.BuildsDir, "leftover")); err == nil {
		t.Error("a retried prepare kept the previous attempt's files")
	}
}

func TestPrepareRefusals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(map[string]any)
		want   string
		build  bool
	}{
		// As GitLab's Docker executor does with a disallowed image.
		{"image not allowed", func(r map[string]any) { r["image"] = map[string]any{"name": "evil.example.com/x:1"} }, "not allowed", false},
		{"no image", func(r map[string]any) { r["image"] = map[string]any{} }, "no image", true},
		{"services without services.allowed", func(r map[string]any) { r["services"] = []any{map[string]any{"name": "postgres"}} }, "services.allowed is empty", true},
		{"job hook", func(r map[string]any) {
			r["hooks"] = []any{map[string]any{"name": "pre_get_sources_script", "script": []string{"curl $CI_API_V4_URL"}}}
		}, "hooks:pre_get_sources_script is not supported", true},
		{"egress beyond maximum", func(r map[string]any) {
			r["variables"] = append(r["variables"].([]map[string]any), map[string]any{"key": EgressRequestVariable, "value": "evil.example.com"})
		}, "egress.maximum", true},
		{"bad server url", func(r map[string]any) {
			r["variables"] = []map[string]any{{"key": "CI_SERVER_URL", "value": "ftp://gitlab.example.com"}}
		}, "CI_SERVER_URL", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			tc.change(h.resp)
			h.writeResponse()
			err := h.d.Prepare(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			var be *BuildError
			if errors.As(err, &be) != tc.build {
				t.Fatalf("build failure = %v, want %v", !tc.build, tc.build)
			}
			code := h.d.Contract.ExitCode(err)
			if (code == 1) != tc.build {
				t.Fatalf("exit code %d", code)
			}
		})
	}
	h := newHarness(t)
	h.backend.pullErr = errors.New("registry unreachable")
	if err := h.d.Prepare(context.Background()); err == nil || h.d.Contract.ExitCode(err) != 2 {
		t.Fatalf("a pull failure is a system failure (retried): %v", err)
	}
}

func TestRunRoutesStages(t *testing.T) {
	h := newHarness(t)
	if err := h.d.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := h.state()
	for _, stage := range []string{"prepare_script", "get_sources", "build_script", "after_script", "archive_cache", "upload_artifacts_on_success", "cleanup_file_variables"} {
		if stage == "build_script" {
			os.MkdirAll(filepath.Join(st.ProjectDir, "out"), 0o755)
			os.WriteFile(filepath.Join(st.ProjectDir, "out", "app"), []byte("app"), 0o644)
		}
		if err := h.run(stage); err != nil {
			t.Fatalf("%s: %v", stage, err)
		}
	}
	byStage := map[string]stageRun{}
	for _, r := range h.runs {
		byStage[r.step.Name] = r
		if strings.Contains(r.script, tokenValue) || strings.Contains(r.script, "vault-secret-value-123") || strings.Contains(r.script, "VAULT_ID_TOKEN") {
			t.Errorf("%s: the script a sandbox got carries a runner-only variable:\n%s", r.step.Name, r.script)
		}
		// The job's own variables reach the job's stages only.
		if kept := strings.Contains(r.script, "export MY_SETTING=on"); kept != (Route(r.step.Name) == KindUser) {
			t.Errorf("%s: MY_SETTING kept = %v:\n%s", r.step.Name, kept, r.script)
		}
		for _, kv := range r.step.Env {
			if strings.Contains(kv, tokenValue) || strings.HasPrefix(kv, "CUSTOM_ENV_") {
				t.Errorf("%s: env %q", r.step.Name, kv)
			}
		}
		if r.step.Workspace != st.BuildsDir || r.step.WorkspaceDir != st.BuildsDir {
			t.Errorf("%s: builds dir not mounted at its own path: %+v", r.step.Name, r.step)
		}
		if !strings.HasPrefix(r.step.ID, "cr-") || !strings.Contains(r.step.ID, "-gl4242-") {
			t.Errorf("%s: id %q", r.step.Name, r.step.ID)
		}
	}
	hasCache := func(r stageRun) bool {
		return slices.ContainsFunc(r.step.Mounts, func(m sandbox.Mount) bool { return m.Source == st.CacheDir })
	}
	for _, s := range []string{"prepare_script", "build_script", "after_script"} {
		r := byStage[s]
		if r.step.Image.Name != st.Image.Name || !slices.Equal(r.step.Allow, st.Allow) || hasCache(r) {
			t.Errorf("%s must run in the job image with the job's egress and no cache: %+v", s, r.step)
		}
	}
	for _, s := range []string{"get_sources", "archive_cache", "upload_artifacts_on_success"} {
		r := byStage[s]
		if r.step.Image.Name != st.Helper.Name || !slices.Equal(r.step.Allow, []string{"gitlab.example.com:443"}) || !hasCache(r) {
			t.Errorf("%s must run in the helper image with GitLab-only egress: %+v", s, r.step)
		}
	}
	if r := byStage["cleanup_file_variables"]; r.step.Image.Name != st.Helper.Name || len(r.step.Allow) != 0 {
		t.Errorf("cleanup_file_variables: %+v", r.step)
	}
	// Once written, the provenance is read-only for the later stages.
	roProvenance := func(r stageRun) bool {
		return slices.Contains(r.step.Mounts, sandbox.Mount{Source: filepath.Join(st.ProjectDir, OutDir), Destination: filepath.Join(st.ProjectDir, OutDir), ReadOnly: true})
	}
	if !roProvenance(byStage["archive_cache"]) || !roProvenance(byStage["upload_artifacts_on_success"]) || roProvenance(byStage["build_script"]) {
		t.Errorf("provenance mounts: %+v", byStage["upload_artifacts_on_success"].step.Mounts)
	}

	// The provenance was written before the first post-build stage.
	b, err := os.ReadFile(filepath.Join(st.ProjectDir, OutDir, ProvenanceFile))
	if err != nil {
		t.Fatal(err)
	}
	var stmt struct {
		Subject []struct {
			Name string `json:"name"`
		} `json:"subject"`
	}
	json.Unmarshal(b, &stmt)
	if len(stmt.Subject) != 1 || stmt.Subject[0].Name != "out/app" {
		t.Errorf("subjects %+v", stmt.Subject)
	}
	for _, want := range []string{strings.Repeat("c", 40), "https://gitlab.example.com/group/project/-/jobs/4242", DefaultBuilderID, ".gitlab-ci.yml#build", "MY_SETTING"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("provenance lacks %q:\n%s", want, b)
		}
	}
	if bytes.Contains(b, []byte(tokenValue)) || bytes.Contains(b, []byte("job-token")) {
		t.Error("the provenance carries a secret")
	}
	if !strings.Contains(h.out.String(), `artifact path "missing/*.bin" matched no files`) {
		t.Errorf("no warning for a path matching nothing:\n%s", h.out.String())
	}
}

func TestRunExitCodes(t *testing.T) {
	h := newHarness(t)
	if err := h.d.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.result = func(stage string, _ runner.SandboxedStep) (runner.StepResult, error) {
		switch stage {
		case "build_script":
			return runner.StepResult{Status: "failed", ExitCode: 3}, nil
		case "step_oom":
			return runner.StepResult{Status: "oom", ExitCode: 137}, nil
		case "step_broken":
			return runner.StepResult{Status: "error"}, errors.New("sandbox failure")
		}
		return runner.StepResult{Status: "ok"}, nil
	}
	err := h.run("build_script")
	if code := h.d.Contract.ExitCode(err); code != 1 {
		t.Fatalf("exit %d (%v)", code, err)
	}
	if b, _ := os.ReadFile(h.d.Contract.BuildExitCodeFile); string(b) != "3\n" {
		t.Fatalf("exit code file %q", b)
	}
	if code := h.d.Contract.ExitCode(h.run("step_oom")); code != 1 {
		t.Fatalf("oom: %d", code)
	}
	if code := h.d.Contract.ExitCode(h.run("step_broken")); code != 2 {
		t.Fatalf("sandbox failure: %d", code)
	}
	if err := h.run("prepare_executor"); err == nil || h.d.Contract.ExitCode(err) != 2 {
		t.Fatalf("a stage the runner never sends: %v", err)
	}
	// A failed job gets no provenance, even at cleanup_file_variables.
	if err := h.run("upload_artifacts_on_failure"); err != nil {
		t.Fatal(err)
	}
	if err := h.run("cleanup_file_variables"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(h.state().ProjectDir, OutDir)); err == nil {
		t.Error("a failed job got a provenance")
	}
}

// A helper stage that cannot find its commands (a broken helper image:
// bash or git missing) is the runner's failure, retried by GitLab; a job
// stage's exit 127 stays the job's.
func TestHelperCommandNotFoundIsSystemFailure(t *testing.T) {
	h := newHarness(t)
	if err := h.d.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.result = func(stage string, _ runner.SandboxedStep) (runner.StepResult, error) {
		return runner.StepResult{Status: "failed", ExitCode: 127}, nil
	}
	if err := h.run("get_sources"); h.d.Contract.ExitCode(err) != 2 || !strings.Contains(err.Error(), "helper image") {
		t.Fatalf("get_sources exit 127: %v", err)
	}
	if err := h.run("build_script"); h.d.Contract.ExitCode(err) != 1 {
		t.Fatalf("build_script exit 127: %v", err)
	}
}

// gitlab-runner's boot_verify probe is a synthetic job with no image, no
// project and no CI_SERVER_URL: with images.default it prepares, and its
// helper stages reach only helper.allow.
func TestPrepareBootVerifyProbe(t *testing.T) {
	h := newHarness(t)
	h.d.Policy.DefaultImage = "oci-archive:/srv/images/job.tar"
	h.resp = map[string]any{
		"id": int64(9223372036854710000), "token": "boot-verify",
		"job_info":  map[string]any{"name": "boot-verify", "stage": "boot-verify"},
		"variables": []map[string]any{{"key": "GIT_STRATEGY", "value": "none", "public": true}, {"key": "GIT_CHECKOUT", "value": "false", "public": true}},
		"steps":     []map[string]any{{"name": "script", "script": []string{"echo boot verify"}, "timeout": 270, "when": "on_success"}},
	}
	h.writeResponse()
	if err := h.d.Prepare(context.Background()); err != nil {
		t.Fatalf("boot_verify probe: %v", err)
	}
	if !strings.Contains(h.out.String(), "boot_verify") {
		t.Errorf("prepare output:\n%s", h.out.String())
	}
}

// A job that deleted its own project directory still gets its file
// variables cleaned up; the provenance (no artifacts) is written, and the
// error text says what failed once.
func TestProvenanceWithoutProjectDir(t *testing.T) {
	h := newHarness(t)
	if err := h.d.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, stage := range []string{"prepare_script", "get_sources", "build_script"} {
		if err := h.run(stage); err != nil {
			t.Fatal(err)
		}
	}
	st := h.state()
	os.RemoveAll(st.ProjectDir)
	if err := h.run("cleanup_file_variables"); err != nil {
		t.Fatalf("cleanup_file_variables: %v", err)
	}
	if last := h.runs[len(h.runs)-1]; last.step.Name != "cleanup_file_variables" {
		t.Fatalf("cleanup_file_variables did not run: %+v", last.step.Name)
	}
	if _, err := os.Stat(filepath.Join(st.ProjectDir, OutDir, ProvenanceFile)); err != nil {
		t.Errorf("no provenance: %v", err)
	}
	if strings.Contains(h.out.String(), "add .cleanroom/") != true {
		t.Errorf("the hint is due when artifacts:paths lacks .cleanroom/:\n%s", h.out.String())
	}
}

// A job that deleted its project dir and whose provenance cannot be
// written (the builds dir replaced by a file) still runs
// cleanup_file_variables, then fails.
func TestCleanupFileVariablesRunsWhenProvenanceFails(t *testing.T) {
	h := newHarness(t)
	if err := h.d.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, stage := range []string{"prepare_script", "get_sources", "build_script"} {
		if err := h.run(stage); err != nil {
			t.Fatal(err)
		}
	}
	st := h.state()
	os.RemoveAll(st.ProjectDir)
	os.MkdirAll(filepath.Dir(st.ProjectDir), 0o755)
	os.Symlink("/etc", st.ProjectDir)
	err := h.run("cleanup_file_variables")
	if err == nil || h.d.Contract.ExitCode(err) != 1 || strings.Count(err.Error(), "provenance") != 1 {
		t.Fatalf("want one build failure naming the provenance, got %v", err)
	}
	if last := h.runs[len(h.runs)-1]; last.step.Name != "cleanup_file_variables" {
		t.Fatalf("cleanup_file_variables did not run")
	}
}

// A job that planted symlinks cannot make the driver (root on the host)
// write or attest outside its own directory.
func TestProvenanceConfinement(t *testing.T) {
	h := newHarness(t)
	if err := h.d.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := h.state()
	outside := t.TempDir()
	os.MkdirAll(st.ProjectDir, 0o755)
	os.MkdirAll(filepath.Join(st.ProjectDir, "out"), 0o755)
	os.WriteFile(filepath.Join(st.ProjectDir, "out", "app"), []byte("x"), 0o644)
	if err := os.Symlink(outside, filepath.Join(st.ProjectDir, OutDir)); err != nil {
		t.Fatal(err)
	}
	if err := h.run("build_script"); err != nil {
		t.Fatal(err)
	}
	if err := h.run("upload_artifacts_on_success"); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("the driver wrote through a planted symlink: %v", ents)
	}
	if fi, err := os.Lstat(filepath.Join(st.ProjectDir, OutDir)); err != nil || !fi.IsDir() {
		t.Fatalf(".cleanroom must be a fresh directory: %v %v", fi, err)
	}
	// Swapped for a link after it was written: the next stage is refused
	// rather than given a mount of whatever the link names.
	os.RemoveAll(filepath.Join(st.ProjectDir, OutDir))
	os.Symlink("/etc", filepath.Join(st.ProjectDir, OutDir))
	if err := h.run("cleanup_file_variables"); err == nil || !strings.Contains(err.Error(), "replaced") {
		t.Fatalf("a replaced provenance directory was mounted: %v", err)
	}

	// An artifact symlinked to a host file is refused, as is a project
	// directory replaced by a link out of the builds directory.
	h2 := newHarness(t)
	h2.d.Prepare(context.Background())
	st2 := h2.state()
	os.MkdirAll(filepath.Join(st2.ProjectDir, "out"), 0o755)
	os.Symlink("/etc/passwd", filepath.Join(st2.ProjectDir, "out", "passwd"))
	h2.run("build_script")
	if err := h2.run("upload_artifacts_on_success"); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Fatalf("an artifact linking out of the project was attested: %v", err)
	}
	h3 := newHarness(t)
	h3.d.Prepare(context.Background())
	st3 := h3.state()
	os.MkdirAll(filepath.Dir(st3.ProjectDir), 0o755)
	os.Symlink(outside, st3.ProjectDir)
	h3.run("build_script")
	if err := h3.run("archive_cache"); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Fatalf("a project dir linking out of the builds dir was accepted: %v", err)
	}
}

// SIGTERM reaches the stage's processes; if the stage does not stop, the
// run is cancelled after the grace period.
func TestRunForwardsSignals(t *testing.T) {
	h := newHarness(t)
	if err := h.d.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	sigs := make(chan os.Signal, 1)
	var cancelled bool
	// A stage that ignores SIGTERM: only the cancel ends it.
	h.d.sandboxed = func(ctx context.Context, env runner.SandboxEnv, st runner.SandboxedStep) (runner.StepResult, error) {
		sigs <- syscall.SIGTERM
		select {
		case <-ctx.Done():
			cancelled = true
			return runner.StepResult{Status: "cancelled"}, runner.ErrCancelled
		case <-time.After(10 * time.Second):
			return runner.StepResult{Status: "ok"}, nil
		}
	}
	start := time.Now()
	err := h.d.Run(context.Background(), h.script("build_script"), "build_script", sigs)
	if !cancelled || time.Since(start) > 5*time.Second {
		t.Fatalf("the stage was not cancelled after the grace period (%v)", time.Since(start))
	}
	if err == nil || h.d.Contract.ExitCode(err) != 1 {
		t.Fatalf("a cancelled stage: %v", err)
	}
	if len(h.backend.signals) != 1 || !strings.HasSuffix(h.backend.signals[0], ":"+strconv.Itoa(int(syscall.SIGTERM))) {
		t.Fatalf("signals %v", h.backend.signals)
	}
}

func TestCleanupIsIdempotentAndSweeps(t *testing.T) {
	h := newHarness(t)
	// Cleanup of a job never prepared (prepare failed before anything).
	if err := h.d.Cleanup(context.Background()); err != nil {
		t.Fatalf("cleanup of an unprepared job: %v", err)
	}
	if err := h.d.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := h.state()

	// Another job, abandoned: its payload is gone.
	other := newHarness(t)
	other.d.StateDir, other.d.Policy = h.d.StateDir, h.d.Policy
	other.resp["id"] = 5151
	other.writeResponse()
	if err := other.d.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	// And one still running: its payload exists, its deadline is ahead.
	live := newHarness(t)
	live.d.StateDir, live.d.Policy = h.d.StateDir, h.d.Policy
	live.resp["id"] = 6161
	live.writeResponse()
	if err := live.d.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	os.Remove(other.d.Contract.JobResponseFile)

	for i := 0; i < 2; i++ {
		if err := h.d.Cleanup(context.Background()); err != nil {
			t.Fatalf("cleanup %d: %v", i, err)
		}
	}
	for _, p := range []string{st.BuildsDir, jobPath(h.d.StateDir, 4242), jobPath(h.d.StateDir, 5151), filepath.Join(h.d.Policy.BuildsDir, "5151")} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s survived cleanup", p)
		}
	}
	for _, p := range []string{jobPath(h.d.StateDir, 6161), filepath.Join(h.d.Policy.BuildsDir, "6161"), st.CacheDir} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s must survive another job's cleanup: %v", p, err)
		}
	}
	// A job whose lock is held by a live call is never swept.
	j, err := openJob(h.d.StateDir, 6161, false, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(live.d.Contract.JobResponseFile)
	h.d.Cleanup(context.Background())
	if _, err := os.Stat(jobPath(h.d.StateDir, 6161)); err != nil {
		t.Errorf("a locked job was swept: %v", err)
	}
	j.close()
	h.d.Cleanup(context.Background())
	if _, err := os.Stat(jobPath(h.d.StateDir, 6161)); err == nil {
		t.Error("an abandoned, unlocked job was not swept")
	}
}

func TestJobSucceeded(t *testing.T) {
	rec := func(stage, status string) StageRecord { return StageRecord{Stage: stage, Status: status} }
	for _, tc := range []struct {
		records []StageRecord
		want    bool
	}{
		{[]StageRecord{rec("prepare_script", "ok"), rec("build_script", "running"), rec("build_script", "ok"), rec("after_script", "failed")}, true},
		{[]StageRecord{rec("prepare_script", "ok"), rec("build_script", "running")}, false}, // the call died
		{[]StageRecord{rec("build_script", "failed")}, false},
		{[]StageRecord{rec("build_script", "ok"), rec("upload_artifacts_on_failure", "ok")}, false},
		{[]StageRecord{rec("get_sources", "ok")}, false},
		{[]StageRecord{rec("build_script", "ok"), rec("step_release", "cancelled")}, false},
		// get_sources failed: the runner skips the job's script and goes
		// on to cleanup_file_variables.
		{[]StageRecord{rec("prepare_script", "ok"), rec("get_sources", "failed")}, false},
		{[]StageRecord{rec("prepare_script", "ok"), rec("get_sources", "failed"), rec("get_sources", "ok"), rec("build_script", "ok")}, true},
		{[]StageRecord{rec("prepare_script", "ok"), rec("get_sources", "ok"), rec("restore_cache", "failed"), rec("build_script", "ok")}, false},
	} {
		if got := jobSucceeded(tc.records); got != tc.want {
			t.Errorf("%+v: %v", tc.records, got)
		}
	}
}

func TestDependenciesFromFeedingStages(t *testing.T) {
	deps := dependencies([]egress.Event{
		{Step: "build_script", Method: "GET", URL: "http://deps.example.org/a", Status: 200, SHA256: strings.Repeat("d", 64), Decision: egress.DecisionAllow},
		{Step: "build_script", Method: "GET", URL: "http://evil.example.org/a", Status: 403, Decision: egress.DecisionDeny},
		{Step: "get_sources", Method: "CONNECT", Host: "gitlab.example.com", Port: 443, Status: 200, Decision: egress.DecisionAllow},
		{Step: "download_artifacts", Method: "CONNECT", Host: "gitlab.example.com", Port: 443, Status: 200, Decision: egress.DecisionAllow},
		{Step: "download_artifacts", Method: "CONNECT", Host: "down.example.com", Port: 443, Status: 502, Decision: egress.DecisionAllow},
		{Step: "upload_artifacts_on_success", Method: "CONNECT", Host: "gitlab.example.com", Port: 443, Status: 200, Decision: egress.DecisionAllow},
	})
	if len(deps) != 2 || deps[0].URL != "http://deps.example.org/a" || deps[1].Step != "download_artifacts" {
		t.Fatalf("%+v", deps)
	}
}

func TestCleanGlobAndExcludes(t *testing.T) {
	for in, want := range map[string]string{"./out/": "out", "out": "out", "a/**/b": "a/**/b", "/etc/passwd": "", "../x": "", "a/../../x": "", "": ""} {
		got, ok := cleanGlob(in)
		if got != want || ok != (want != "") {
			t.Errorf("cleanGlob(%q) = %q %v", in, got, ok)
		}
	}
	logs := []glob.Pattern{glob.MustCompile("out/**/*.log")}
	for name, want := range map[string]bool{"out/a.log": true, "out/x/y/a.log": true, "out/a.txt": false, "other/a.log": false} {
		if excluded(name, logs) != want {
			t.Errorf("exclude out/**/*.log vs %s", name)
		}
	}
	if !excluded("out/tmp/x", []glob.Pattern{glob.MustCompile("out/tmp")}) {
		t.Error("an excluded directory excludes what is in it")
	}
}

// With signing mode "key" the driver signs the provenance with the admin's
// key; the bundle verifies against the public key and carries the
// statement that was written.
func TestProvenanceSignedWithAdminKey(t *testing.T) {
	h := newHarness(t)
	keys := t.TempDir()
	priv, pub, err := sign.GenerateKeyPair(keys, []byte("admin-pw"))
	if err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(keys, "pw")
	os.WriteFile(pwFile, []byte("admin-pw\n"), 0o600)
	h.d.Policy.SigningMode = sign.ModeKey
	h.d.Policy.Signing = SigningConfig{Key: priv, PasswordFile: pwFile}
	if err := h.d.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := h.state()
	os.MkdirAll(filepath.Join(st.ProjectDir, "out"), 0o755)
	os.WriteFile(filepath.Join(st.ProjectDir, "out", "app"), []byte("app"), 0o644)
	if err := h.run("build_script"); err != nil {
		t.Fatal(err)
	}
	if err := h.run("upload_artifacts_on_success"); err != nil {
		t.Fatal(err)
	}
	bundle, err := os.ReadFile(filepath.Join(st.ProjectDir, OutDir, ProvenanceBundleFile))
	if err != nil {
		t.Fatal(err)
	}
	written, _ := os.ReadFile(filepath.Join(st.ProjectDir, OutDir, ProvenanceFile))
	pk, err := sign.LoadPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	payload, _, err := sign.VerifyAttestation(bundle, sign.VerifyOptions{PublicKey: pk})
	if err != nil {
		t.Fatalf("bundle does not verify: %v", err)
	}
	if !bytes.Equal(payload, bytes.TrimSpace(written)) {
		t.Fatal("the signed statement is not the one written")
	}
}

// Keyless signing needs a valid ID token from the job (the harness's is a
// placeholder, not a JWT): the job fails before any Sigstore service is
// called, with a message naming the variable, and no bundle is written.
func TestKeylessSigningNeedsTheJobsToken(t *testing.T) {
	h := newHarness(t)
	h.d.Policy.SigningMode = sign.ModeKeyless
	if err := h.d.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := h.state()
	os.MkdirAll(filepath.Join(st.ProjectDir, "out"), 0o755)
	os.WriteFile(filepath.Join(st.ProjectDir, "out", "app"), []byte("app"), 0o644)
	h.run("build_script")
	err := h.run("upload_artifacts_on_success")
	if err == nil || !strings.Contains(err.Error(), "SIGSTORE_ID_TOKEN") {
		t.Fatalf("want an error naming SIGSTORE_ID_TOKEN, got %v", err)
	}
	if _, err := os.Stat(filepath.Join(st.ProjectDir, OutDir, ProvenanceBundleFile)); err == nil {
		t.Fatal("a bundle was written without a token")
	}
}

func (f *fakeBackend) RemoveImage(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed = append(f.removed, name)
	return nil
}

// Images the driver resolved and no job used for imageRetention are
// removed by a later cleanup; images of jobs still on the host, and
// recently used ones, stay.
func TestCleanupRemovesUnusedImages(t *testing.T) {
	h := newHarness(t)
	t0 := time.Now()
	h.d.now = func() time.Time { return t0 }
	if err := h.d.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	first := h.state()
	// Another job, still on the host (prepared, not cleaned up), uses an
	// image last recorded as long ago.
	liveDir := jobPath(h.d.StateDir, 5151)
	os.MkdirAll(liveDir, 0o700)
	b, _ := json.Marshal(JobState{JobID: 5151, Image: ImageState{Name: "live-image"}, Helper: first.Helper, Deadline: t0.Add(30 * 24 * time.Hour), ResponseFile: h.d.Contract.JobResponseFile})
	os.WriteFile(filepath.Join(liveDir, jobFile), b, 0o644)
	noteImageUse(h.d.StateDir, t0, "live-image")
	if err := h.d.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(h.backend.removed) != 0 {
		t.Fatalf("images used just now were removed: %v", h.backend.removed)
	}

	// Eight days later a job with another image runs; its cleanup removes
	// the first job's image, keeps the helper (used again) and the live
	// job's image.
	later := t0.Add(8 * 24 * time.Hour)
	h.d.now = func() time.Time { return later }
	h.resp["image"] = map[string]any{"name": "oci-archive:/srv/images/other.tar"}
	h.writeResponse()
	if err := h.d.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := h.d.Cleanup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(h.backend.removed, []string{first.Image.Name}) {
		t.Fatalf("removed %v, want only %s", h.backend.removed, first.Image.Name)
	}
	// Removed once: its record went with it.
	h.d.Cleanup(context.Background())
	if len(h.backend.removed) != 1 {
		t.Fatalf("removed again: %v", h.backend.removed)
	}
}
