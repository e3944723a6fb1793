package gitlab

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/runner"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
)

// A stage's egress log is published next to the artifacts and read back
// into the provenance. The loopback relay records plain-HTTP requests to
// GitLab (a clone URL with the job token in its userinfo) and presigned
// cache URLs (the signature is the credential): none of that, nor any
// masked variable a step spells into a URL or host name, may reach the
// stage's egress log or the provenance. The requests are recorded by
// stages whose fetches feed the build, so they are listed as dependencies.
func TestStageEgressLogIsRedactedAndMasked(t *testing.T) {
	h := newHarness(t)
	const (
		signature = "5e1f0a3b9c7d2e4f6a8b0c1d3e5f7a9b1c3d5e7f9a0b2c4d6e8f0a1b3c5d7e9f"
		accessKey = "AKIAEXAMPLEACCESSKEY7"
		vault     = "vault-secret-value-123" // a masked variable of the harness
	)
	urls := []string{
		"http://gitlab-ci-token:job-token@127.0.0.1:8080/group/project.git/info/refs?service=git-upload-pack",
		"http://127.0.0.1:9000/runner-cache/project/77/default.zip?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=" + accessKey + "%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=" + signature,
		"http://127.0.0.1:8080/api/v4/jobs/4242/artifacts?job_token=job-token",
		"http://127.0.0.1:8080/group/project/-/raw/main/x?ref=" + vault,
	}
	sandboxed := h.d.sandboxed
	h.d.sandboxed = func(ctx context.Context, env runner.SandboxEnv, st runner.SandboxedStep) (runner.StepResult, error) {
		if st.Name == StageRestoreCache || st.Name == StageDownloadArtifacts {
			for _, u := range urls {
				env.Recorder.Record(egress.Event{Time: time.Now(), Step: st.Name, Method: "GET", Scheme: "http", Host: "127.0.0.1", Port: 8080, URL: u, Status: 200, SHA256: strings.Repeat("d", 64), Size: 1, Decision: "allowed", Rule: "127.0.0.1:8080"})
			}
			env.Recorder.Record(egress.Event{Time: time.Now(), Step: st.Name, Method: "CONNECT", Scheme: "connect", Host: vault + ".example.org", Port: 443, Decision: "denied", Reason: "not allowed: " + vault + ".example.org"})
		}
		return sandboxed(ctx, env, st)
	}
	if err := h.d.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, stage := range []string{"prepare_script", StageGetSources, StageRestoreCache, StageDownloadArtifacts, "build_script", "cleanup_file_variables"} {
		if err := h.run(stage); err != nil {
			t.Fatalf("%s: %v", stage, err)
		}
	}
	st := h.state()
	files := map[string]string{
		"the published log":      filepath.Join(st.ProjectDir, OutDir, EgressLogFile),
		"the stage's provenance": filepath.Join(st.ProjectDir, OutDir, ProvenanceFile),
	}
	j, err := openJob(h.d.StateDir, 4242, false, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	files["the job's egress log"] = j.file(egressFile)
	j.close()
	for what, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		s := string(b)
		for _, secret := range []string{"job-token", signature, accessKey, vault, "gitlab-ci-token"} {
			if strings.Contains(s, secret) {
				t.Errorf("%s shows %q:\n%s", what, secret, s)
			}
		}
		if !strings.Contains(s, "/group/project.git/info/refs") || !strings.Contains(s, "runner-cache/project/77/default.zip") {
			t.Errorf("%s lost the requests themselves:\n%s", what, s)
		}
	}
	log, _ := os.ReadFile(files["the job's egress log"])
	if !strings.Contains(string(log), "REDACTED") || !strings.Contains(string(log), "[masked]") {
		t.Errorf("the egress log shows neither a redacted parameter nor a masked value:\n%s", log)
	}
}
