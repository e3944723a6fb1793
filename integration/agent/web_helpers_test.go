package agent_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cleanroom-ci/cleanroom/internal/clitest"
	"github.com/cleanroom-ci/cleanroom/internal/testenv"
	"github.com/cleanroom-ci/cleanroom/internal/testimage"
)

// webChromium is Debian's chromium, installed by hack/setup.sh.
const webChromium = "/usr/bin/chromium"

// webAgent is a `cleanroom agent` process run by a test.
type webAgent struct {
	t      *testing.T
	bin    string
	cfg    clitest.Config
	url    string // http://127.0.0.1:PORT
	token  string // secret of a submit-scope token
	keyDir string // cosign.key and cosign.pub the agent signs with
	cmd    *exec.Cmd
	logs   *clitest.LockedBuffer
	exited chan struct{}
	err    error
}

// webClient talks to the agent only: no proxy from the environment, so the
// test's traffic never leaves loopback.
var webClient = &http.Client{
	Transport: &http.Transport{Proxy: nil},
	Timeout:   2 * time.Minute,
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
}

// webRequirements skips (or fails under CI=true) without what a real
// agent and a real browser need.
func webRequirements(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t)
	if _, err := os.Stat(clitest.Address); err != nil {
		testenv.Missing(t, "containerd at "+clitest.Address)
	}
	testenv.RequireBinary(t, "runc")
	testenv.RequireBinary(t, "ctr")
	if _, err := os.Stat(webChromium); err != nil {
		testenv.Missing(t, "chromium ("+webChromium+"; apt-get install chromium)")
	}
}

// webFreePort picks a loopback port for the agent's listen address (the
// configuration wants HOST:PORT, not :0).
func webFreePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startWebAgent writes a configuration (key signing, two job slots), a
// token, and starts the agent, returning once it answers /readyz.
func startWebAgent(t *testing.T, cfg clitest.Config) *webAgent {
	t.Helper()
	a := &webAgent{t: t, bin: clitest.Binary(t), cfg: cfg, logs: &clitest.LockedBuffer{}, exited: make(chan struct{})}
	dir := t.TempDir()
	a.keyDir = filepath.Join(dir, "keys")
	if err := os.MkdirAll(a.keyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	keygen := exec.Command(a.bin, "keygen")
	keygen.Dir, keygen.Env = a.keyDir, append(os.Environ(), "COSIGN_PASSWORD=agent-web-pw")
	if out, err := keygen.CombinedOutput(); err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	pwFile := filepath.Join(dir, "key-password")
	if err := os.WriteFile(pwFile, []byte("agent-web-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens := filepath.Join(dir, "tokens.json")
	out, err := exec.Command(a.bin, "agent", "token", "create", "--tokens-file", tokens, "--name", "web", "--scope", "submit").Output()
	if err != nil {
		t.Fatalf("token create: %v", err)
	}
	a.token = strings.TrimSpace(string(out))
	port := webFreePort(t)
	a.url = fmt.Sprintf("http://127.0.0.1:%d", port)
	conf := fmt.Sprintf(`version: 1
listen: 127.0.0.1:%d
data_dir: %s
concurrency: 2
tokens_file: %s
jobs:
  grace: 1m
signing:
  mode: key
  key: %s
  password_file: %s
`, port, filepath.Join(dir, "data"), tokens, filepath.Join(a.keyDir, "cosign.key"), pwFile)
	confFile := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	a.cmd = exec.Command(a.bin, "--namespace", cfg.Namespace, "--state-dir", cfg.StateDir, "--containerd-address", clitest.Address,
		"agent", "--config", confFile, "--id", "agent-web")
	a.cmd.Stdout, a.cmd.Stderr = a.logs, a.logs
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { a.err = a.cmd.Wait(); close(a.exited) }()
	t.Cleanup(func() {
		select {
		case <-a.exited:
		default:
			// The test failed before its own shutdown: stop this agent's
			// process group (the agent and its job children) only.
			syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
			<-a.exited
		}
		if t.Failed() {
			t.Logf("agent output:\n%s", a.logs.String())
		}
	})
	deadline := time.Now().Add(2 * time.Minute)
	for {
		select {
		case <-a.exited:
			t.Fatalf("agent exited at start: %v\n%s", a.err, a.logs.String())
		default:
		}
		if resp, err := webClient.Get(a.url + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return a
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent not ready within 2m:\n%s", a.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop sends SIGTERM (the drain path) and waits for a clean exit.
func (a *webAgent) stop() {
	a.t.Helper()
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		a.t.Fatal(err)
	}
	select {
	case <-a.exited:
	case <-time.After(2 * time.Minute):
		a.t.Fatalf("agent did not exit within 2m of SIGTERM:\n%s", a.logs.String())
	}
	if a.err != nil {
		a.t.Fatalf("agent exited with %v after SIGTERM:\n%s", a.err, a.logs.String())
	}
}

// api does an authenticated request and decodes a JSON answer into out
// (if non-nil), failing the test on any status but want.
func (a *webAgent) api(method, path, contentType string, body io.Reader, want int, out any) {
	a.t.Helper()
	b := a.raw(method, path, contentType, body, want)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			a.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}

// raw does an authenticated request and returns the body.
func (a *webAgent) raw(method, path, contentType string, body io.Reader, want int) []byte {
	a.t.Helper()
	req, err := http.NewRequest(method, a.url+path, body)
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := webClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	if resp.StatusCode != want {
		a.t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, want, b)
	}
	return b
}

// webJob is the part of a job's JSON the test reads.
type webJob struct {
	ID      string `json:"id"`
	State   string `json:"state"`
	Error   string `json:"error"`
	Outputs []struct {
		Name   string `json:"name"`
		SHA256 string `json:"sha256"`
	} `json:"outputs"`
}

// submit uploads a source tarball (files plus the busybox test image at
// images/builder.tar) and returns the job ID.
func (a *webAgent) submit(files map[string]string) string {
	a.t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	add := func(name string, mode int64, data []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(data)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
			a.t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			a.t.Fatal(err)
		}
	}
	for name, body := range files {
		add(name, 0o644, []byte(body))
	}
	img, err := os.ReadFile(testimage.Busybox(a.t))
	if err != nil {
		a.t.Fatal(err)
	}
	add("images/builder.tar", 0o644, img)
	if err := tw.Close(); err != nil {
		a.t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		a.t.Fatal(err)
	}
	var sub struct {
		ID string `json:"id"`
	}
	a.api(http.MethodPost, "/api/v1/jobs", "application/gzip", &buf, http.StatusAccepted, &sub)
	return sub.ID
}

func (a *webAgent) job(id string) webJob {
	a.t.Helper()
	var j webJob
	a.api(http.MethodGet, "/api/v1/jobs/"+id, "", nil, http.StatusOK, &j)
	return j
}

// waitState polls the job until cond holds for its state.
func (a *webAgent) waitState(id string, d time.Duration, cond func(string) bool) webJob {
	a.t.Helper()
	deadline := time.Now().Add(d)
	for {
		j := a.job(id)
		if cond(j.State) {
			return j
		}
		if time.Now().After(deadline) {
			log := a.raw(http.MethodGet, "/api/v1/jobs/"+id+"/log", "", nil, http.StatusOK)
			a.t.Fatalf("job %s still %s after %v; log:\n%s", id, j.State, d, log)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// download fetches one of a job's outputs into dir under its base name,
// as a browser's download would.
func (a *webAgent) download(id, name, dir string) {
	a.t.Helper()
	b := a.raw(http.MethodGet, "/api/v1/jobs/"+id+"/files/"+name, "", nil, http.StatusOK)
	if err := os.WriteFile(filepath.Join(dir, filepath.Base(name)), b, 0o644); err != nil {
		a.t.Fatal(err)
	}
}

// newBrowser starts a headless Chromium with a fresh profile that talks to
// loopback only: no background services, no proxy, and every host name
// but 127.0.0.1 unresolvable.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(webChromium),
		chromedp.Headless,
		chromedp.NoSandbox, // the tests run as root
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-breakpad", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("disable-client-side-phishing-detection", true),
		chromedp.Flag("disable-features", "Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,AutofillServerCommunication"),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("force-device-scale-factor", "1"),
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, tcancel := context.WithTimeout(ctx, 5*time.Minute)
	t.Cleanup(func() { tcancel(); cancel(); acancel() })
	return ctx
}

// webEval evaluates a JavaScript expression in the page.
func webEval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// webWait evaluates a boolean expression until it is true. Errors count
// as false: the page may be between two documents (a form post, a
// reload), when there is nothing to evaluate in.
func webWait(t *testing.T, ctx context.Context, d time.Duration, js string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + (document.body ? document.body.innerText : "")`))
			t.Fatalf("page condition %s not met within %v (last error %v); page:\n%s", js, d, err, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// webNavigate loads a page of the agent.
func webNavigate(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("navigate %s: %v", url, err)
	}
}

// jsString quotes s for use in a JavaScript expression.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
