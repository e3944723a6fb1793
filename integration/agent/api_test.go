package agent_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/agent/jobs"
	"github.com/cleanroom-ci/cleanroom/internal/agenttest"
)

// TestAgentAPI submits a job over the API, follows its log as
// Server-Sent Events while it runs, downloads its artifact and provenance,
// and checks what each token scope may do.
func TestAgentAPI(t *testing.T) {
	e := newEnv(t)
	a := e.agent("api", "", "source:\n  max_upload: 4MiB\n", 0)
	ci := e.client(a, e.submit)

	p := pipeline(`
echo "hello from the job"
sleep 1
mkdir -p out && echo artifact-content > out/a.txt
echo "second line"`, "artifacts: [out/a.txt]\n")
	id := e.submit1(ci, e.source(p, nil))

	// Live log as SSE, from the start, ending with the job.
	req, _ := http.NewRequest("GET", a.URL+"/api/v1/jobs/"+id+"/log", nil)
	req.Header.Set("Authorization", "Bearer "+e.read)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	var text strings.Builder
	var endState, event string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			var d struct{ Text, State string }
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &d); err != nil {
				t.Fatalf("SSE data %q: %v", line, err)
			}
			if event == "log" {
				text.WriteString(d.Text)
			} else if event == "end" {
				endState = d.State
			}
		}
	}
	resp.Body.Close()
	if endState != jobs.StateSucceeded {
		t.Fatalf("SSE end state %q; log:\n%s", endState, text.String())
	}
	for _, want := range []string{"hello from the job", "second line", "[build]", "job succeeded"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("live log lacks %q:\n%s", want, text.String())
		}
	}

	j := e.wait(ci, id, 10*time.Second, agenttest.Finished)
	if j.State != jobs.StateSucceeded || j.Attempt != 1 || j.Trigger.Token != "ci" {
		t.Fatalf("job %+v", j)
	}
	sum := sha256.Sum256([]byte("artifact-content\n"))
	want := hex.EncodeToString(sum[:])
	if len(j.Result.Artifacts) != 1 || j.Result.Artifacts[0].SHA256 != want {
		t.Fatalf("artifacts %+v, want sha256 %s", j.Result.Artifacts, want)
	}
	art, err := ci.File(id, "artifacts/out/a.txt")
	if err != nil || string(art) != "artifact-content\n" {
		t.Fatalf("artifact download: %q %v", art, err)
	}
	prov, err := ci.File(id, "provenance.intoto.json")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Subject []struct {
			Name   string
			Digest map[string]string
		}
		Predicate struct {
			RunDetails struct {
				Builder struct{ ID string }
			}
		}
	}
	if err := json.Unmarshal(prov, &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Subject) != 1 || st.Subject[0].Digest["sha256"] != want {
		t.Fatalf("provenance subjects %+v", st.Subject)
	}
	if st.Predicate.RunDetails.Builder.ID != "https://cleanroom.dev/builder/agent@v1" {
		t.Fatalf("builder id %q", st.Predicate.RunDetails.Builder.ID)
	}
	// A name the job does not list is not served, whatever it looks like.
	if r, _ := ci.Do("GET", "/api/v1/jobs/"+id+"/files/../../"+id+"/source.tar", "", nil, nil); r.Status != 404 {
		t.Fatalf("unlisted file: %s", r)
	}

	// Scopes.
	anon := agenttest.Client{URL: a.URL}
	viewer := e.client(a, e.read)
	checks := []struct {
		name   string
		c      agenttest.Client
		method string
		path   string
		ct     string
		body   string
		status int
	}{
		{"no token submits", anon, "POST", "/api/v1/jobs", "application/json", `{}`, 401},
		{"no token reads", anon, "GET", "/api/v1/jobs/" + id, "", "", 401},
		{"wrong token", agenttest.Client{URL: a.URL, Token: "crt_not-a-token"}, "GET", "/api/v1/jobs", "", "", 401},
		{"read token submits", viewer, "POST", "/api/v1/jobs", "application/json", `{"git":{"repository":"https://git.example.org/a.git","ref":"main"}}`, 403},
		{"read token cancels", viewer, "POST", "/api/v1/jobs/" + id + "/cancel", "", "", 403},
		{"read token reads", viewer, "GET", "/api/v1/jobs/" + id, "", "", 200},
		{"read token lists", viewer, "GET", "/api/v1/jobs", "", "", 200},
		{"metrics need a token", anon, "GET", "/metrics", "", "", 401},
		{"health needs none", anon, "GET", "/healthz", "", "", 200},
		{"other submitter cancels", e.client(a, e.other), "POST", "/api/v1/jobs/" + id + "/cancel", "", "", 403},
		{"admin cancels a finished job", e.client(a, e.admin), "POST", "/api/v1/jobs/" + id + "/cancel", "", "", 409},
	}
	for _, c := range checks {
		r, err := c.c.Do(c.method, c.path, c.ct, strings.NewReader(c.body), nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != c.status {
			t.Errorf("%s: %s, want %d", c.name, r, c.status)
		}
	}
	// The counters move right after the state is recorded: poll briefly.
	var r agenttest.Response
	for _, want := range []string{`cleanroom_agent_jobs_finished_total{state="succeeded"} 1`, "cleanroom_agent_queue_depth 0", "cleanroom_agent_jobs_running 0",
		"cleanroom_agent_job_duration_seconds_bucket", "cleanroom_agent_egress_denials_total 0",
		`cleanroom_agent_job_errors_total{cause="infrastructure"} 0`, `cleanroom_agent_job_errors_total{cause="user"} 0`,
		"cleanroom_agent_queue_wait_seconds_count 1", `cleanroom_agent_step_duration_seconds_count{status="ok"} 1`,
		`cleanroom_agent_auth_failures_total{outcome="invalid"} 1`, "cleanroom_agent_nats_connected 1", "cleanroom_agent_build_info{agent=",
		"cleanroom_agent_jobs_lost_total 0", `cleanroom_agent_jobs_handed_back_total{reason="drain"} 0`} {
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			r, _ = viewer.Do("GET", "/metrics", "", nil, nil)
			if strings.Contains(string(r.Body), want) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("metrics lack %q", want)
				break
			}
		}
	}

	// A step failure is a failed job (exit 1); a broken pipeline is
	// refused at submission, naming file, line and field.
	failID := e.submit1(ci, e.source(pipeline("echo failing; exit 3", ""), nil))
	bad := "version: 1\nimage: oci-archive:./images/builder.tar\nsteps:\n  - name: x\n    rn: echo\n"
	if r, _ := ci.Do("POST", "/api/v1/jobs", "application/gzip", bytes.NewReader(e.source(bad, nil)), nil); r.Status != 400 || !strings.Contains(string(r.Body), "cleanroom.yaml:5:") || !strings.Contains(string(r.Body), "rn") {
		t.Errorf("broken pipeline: %s", r)
	}
	if j := e.wait(ci, failID, time.Minute, agenttest.Finished); j.State != jobs.StateFailed || j.ExitCode != 1 || j.Result.FailedStep != "build" {
		t.Errorf("failing step: %+v", j)
	}
	// An image archive outside the job's source is refused.
	outside := strings.Replace(pipeline("echo x", ""), "./images/builder.tar", e.image, 1)
	if r, _ := ci.Do("POST", "/api/v1/jobs", "application/gzip", bytes.NewReader(e.source(outside, nil)), nil); r.Status != 403 || !strings.Contains(string(r.Body), "outside the job's source") {
		t.Errorf("host image archive: %s", r)
	}
}

// TestAgentBadInputs checks that malformed submissions are refused at once
// with an error that says what is wrong, and queue nothing.
func TestAgentBadInputs(t *testing.T) {
	e := newEnv(t)
	a := e.agent("bad", "", "source:\n  max_upload: 2MiB\n  allow: [git.example.org]\n", 0)
	ci := e.client(a, e.submit)

	traversal := func(name string, typ byte, link string) []byte {
		var buf bytes.Buffer
		gz := gzip.NewWriter(&buf)
		tw := tar.NewWriter(gz)
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: typ, Linkname: link, Mode: 0o644, Size: map[bool]int64{true: 2}[typ == tar.TypeReg]})
		if typ == tar.TypeReg {
			tw.Write([]byte("x\n"))
		}
		tw.Close()
		gz.Close()
		return buf.Bytes()
	}
	cases := []struct {
		name   string
		ct     string
		path   string
		body   []byte
		status int
		want   string
	}{
		{"malformed JSON", "application/json", "/api/v1/jobs", []byte(`{"git": {`), 400, "JSON"},
		{"unknown field", "application/json", "/api/v1/jobs", []byte(`{"gti": {}}`), 400, "gti"},
		{"huge JSON", "application/json", "/api/v1/jobs", append([]byte(`{"pipeline": "`), bytes.Repeat([]byte("a"), 100<<10)...), 400, "larger than"},
		{"no source", "application/json", "/api/v1/jobs", []byte(`{"pipeline": "x.yaml"}`), 400, "is required"},
		{"git host not allowed", "application/json", "/api/v1/jobs", []byte(`{"git": {"repository": "https://other.example.org/a.git", "ref": "main"}}`), 400, "allowlist"},
		{"ssh remote", "application/json", "/api/v1/jobs", []byte(`{"git": {"repository": "ssh://git.example.org/a.git", "ref": "main"}}`), 400, "https"},
		{"credentials in URL", "application/json", "/api/v1/jobs", []byte(`{"git": {"repository": "https://u:p@git.example.org/a.git", "ref": "main"}}`), 400, "credentials"},
		{"option injection ref", "application/json", "/api/v1/jobs", []byte(`{"git": {"repository": "https://git.example.org/a.git", "ref": "--upload-pack=x"}}`), 400, "ref"},
		{"pipeline outside", "application/json", "/api/v1/jobs", []byte(`{"git": {"repository": "https://git.example.org/a.git", "ref": "main"}, "pipeline": "../../etc/x.yaml"}`), 400, "relative path inside"},
		{"path traversal", "application/gzip", "/api/v1/jobs", traversal("../evil.sh", tar.TypeReg, ""), 400, "../evil.sh"},
		{"absolute path", "application/gzip", "/api/v1/jobs", traversal("/etc/cron.d/x", tar.TypeReg, ""), 400, "/etc/cron.d/x"},
		{"symlink out", "application/gzip", "/api/v1/jobs", traversal("link", tar.TypeSymlink, "/etc"), 400, "link"},
		{"device", "application/gzip", "/api/v1/jobs", traversal("dev", tar.TypeChar, ""), 400, "dev"},
		{"not a tarball", "application/gzip", "/api/v1/jobs", []byte("just some text, not a tar at all"), 400, "source tarball"},
		{"too large", "application/gzip", "/api/v1/jobs", bytes.Repeat([]byte{0}, 3<<20), 413, "max_upload"},
		{"empty upload", "application/gzip", "/api/v1/jobs", nil, 400, "empty"},
		{"wrong content type", "text/plain", "/api/v1/jobs", []byte("x"), 415, "Content-Type"},
		{"unknown job", "", "/api/v1/jobs/j20260101t000000-00000000", nil, 404, "no job"},
		{"malformed job id", "", "/api/v1/jobs/..%2f..%2fetc", nil, 404, ""},
	}
	for _, c := range cases {
		method := "POST"
		if c.ct == "" {
			method = "GET"
		}
		r, err := ci.Do(method, c.path, c.ct, bytes.NewReader(c.body), nil)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != c.status || !strings.Contains(string(r.Body), c.want) {
			t.Errorf("%s: %s; want %d mentioning %q", c.name, r, c.status, c.want)
		}
	}
	r, _ := ci.Do("GET", "/api/v1/jobs", "", nil, nil)
	var list struct{ Jobs []jobs.Job }
	json.Unmarshal(r.Body, &list)
	if len(list.Jobs) != 0 {
		t.Fatalf("refused submissions queued %d jobs", len(list.Jobs))
	}
}

// TestAgentCancel cancels a running job: the sandbox is gone within
// seconds and the job is "cancelled", not "failed".
func TestAgentCancel(t *testing.T) {
	e := newEnv(t)
	a := e.agent("cancel", "", "", 0)
	ci := e.client(a, e.submit)
	id := e.submit1(ci, e.source(pipeline("echo started-sleeping\nsleep 120", ""), nil))
	e.wait(ci, id, time.Minute, func(j jobs.Job) bool { return j.State == jobs.StateRunning })
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(logTail(ci, id), "started-sleeping") {
		if time.Now().After(deadline) {
			t.Fatal("step never started")
		}
		time.Sleep(100 * time.Millisecond)
	}
	start := time.Now()
	r, _ := ci.Do("POST", "/api/v1/jobs/"+id+"/cancel", "", nil, nil)
	if r.Status != 202 {
		t.Fatalf("cancel: %s", r)
	}
	j := e.wait(ci, id, 30*time.Second, agenttest.Finished)
	if j.State != jobs.StateCancelled || j.Error != "cancelled by token ci" {
		t.Fatalf("cancelled job: state %s error %q", j.State, j.Error)
	}
	// The step table survives the cancel.
	if j.Result == nil || len(j.Result.Steps) != 1 || j.Result.Steps[0].Name != "build" {
		t.Fatalf("cancelled job lost its step table: %+v", j.Result)
	}
	t.Logf("cancel took %v", time.Since(start).Round(time.Millisecond))
	waitNoChildRuns(t, 10*time.Second)

	// A queued job cancelled before any agent takes it never runs.
	stopped := e.agent("cancel-queued", "", "", 0, func(c *agenttest.AgentConfig) { c.Concurrency = 1 })
	c2 := e.client(stopped, e.submit)
	busy := e.submit1(c2, e.source(pipeline("sleep 5", ""), nil))
	queued := e.submit1(c2, e.source(pipeline("echo must-not-run", ""), nil))
	r, _ = c2.Do("POST", "/api/v1/jobs/"+queued+"/cancel", "", nil, nil)
	if r.Status != 202 {
		t.Fatalf("cancel queued: %s", r)
	}
	e.wait(c2, busy, time.Minute, agenttest.Finished)
	j = e.wait(c2, queued, 10*time.Second, agenttest.Finished)
	if j.State != jobs.StateCancelled || j.Attempt != 0 || strings.Contains(logOf(t, c2, queued), "must-not-run") {
		t.Fatalf("queued job cancelled: %+v", j)
	}

	// A job stopped by jobs.timeout keeps its step table too.
	timed := e.agent("timeout", "", "jobs: {timeout: 4s}\n", 0)
	c3 := e.client(timed, e.submit)
	j = e.wait(c3, e.submit1(c3, e.source(pipeline("echo slow\nsleep 120", ""), nil)), time.Minute, agenttest.Finished)
	if j.State != jobs.StateError || !strings.Contains(j.Error, "jobs.timeout") || j.Result == nil || len(j.Result.Steps) != 1 {
		t.Fatalf("timed-out job: state %s error %q result %+v", j.State, j.Error, j.Result)
	}
}

// logTail returns the log so far of a running job without waiting for
// its end: the plain-text follow is read for a moment.
func logTail(c agenttest.Client, id string) string {
	client := &http.Client{Timeout: 500 * time.Millisecond}
	req, _ := http.NewRequest("GET", c.URL+"/api/v1/jobs/"+id+"/log", nil)
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := client.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}
