package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cleanroom-ci/cleanroom/agent/auth"
	"github.com/cleanroom-ci/cleanroom/internal/testenv"
)

// webChromium is Debian's chromium, installed by hack/setup.sh.
const webChromium = "/usr/bin/chromium"

// newWebEnv is the agent tests' env, with the jobs in the web test's own
// namespace and state dir, after checking for what a browser needs.
func newWebEnv(t *testing.T) *env {
	t.Helper()
	testenv.RequireBinary(t, "ctr")
	if _, err := os.Stat(webChromium); err != nil {
		testenv.Missing(t, "chromium ("+webChromium+"; apt-get install chromium)")
	}
	return newEnvFor(t, webCfg)
}

// webSigning makes a password-protected cosign key pair in dir and
// returns the agent configuration that signs with it.
func webSigning(t *testing.T, bin, dir string) string {
	t.Helper()
	keygen := exec.Command(bin, "keygen")
	keygen.Dir, keygen.Env = dir, append(os.Environ(), "COSIGN_PASSWORD=agent-web-pw")
	if out, err := keygen.CombinedOutput(); err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	pwFile := filepath.Join(dir, "key-password")
	if err := os.WriteFile(pwFile, []byte("agent-web-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("signing:\n  mode: key\n  key: %s\n  password_file: %s\n", filepath.Join(dir, "cosign.key"), pwFile)
}

// webClient does not follow redirects, so the test sees them.
var webClient = &http.Client{
	Timeout:       time.Minute,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// webGet fetches a page as a browser without scripts would, with the
// session cookie when token is set.
func webGet(t *testing.T, url, token string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.AddCookie(&http.Cookie{Name: auth.DefaultCookieName, Value: token})
	}
	resp, err := webClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
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
