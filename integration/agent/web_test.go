// Package agent_test tests `cleanroom agent` end to end: the built binary
// as a daemon, real jobs in containerd, and its web page in a headless
// Chromium. Root, containerd, runc and chromium are needed; under CI=true
// a missing one fails the test.
package agent_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"image/png"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cleanroom-ci/cleanroom/agent/jobs"
	"github.com/cleanroom-ci/cleanroom/internal/agenttest"
	"github.com/cleanroom-ci/cleanroom/internal/clitest"
	"github.com/cleanroom-ci/cleanroom/internal/testenv"
)

// The agent and its jobs use their own containerd namespace and state
// directory, so residue is this test's alone.
var webCfg = clitest.Config{Namespace: testenv.Scope("cleanroom-agent-web"), StateDir: testenv.Scope("/run/cleanroom-agent-web")}

const wantCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'"

// TestAgentWebPage runs a real agent, builds two jobs on it, and checks
// the page a person sees: login, the job list, a finished job's log,
// steps, egress, artifacts and provenance (whose verify command is run),
// and a running job's log arriving live.
func TestAgentWebPage(t *testing.T) {
	e := newWebEnv(t)
	start := time.Now()
	// The agent signs with a key; the env's "ci" token (submit scope)
	// submits the jobs and logs in to the page.
	keyDir := t.TempDir()
	a := e.agent("agent-web", "", "jobs:\n  grace: 1m\n"+webSigning(t, e.bin, keyDir), 0)
	ci := e.client(a, e.submit)

	var nonce [4]byte
	rand.Read(nonce[:])
	marker := "web-marker-" + hex.EncodeToString(nonce[:])
	artifact := "hello from the agent page test " + marker + "\n"
	sum := sha256.Sum256([]byte(artifact))
	artifactSHA := hex.EncodeToString(sum[:])

	// Job 1: a build that logs, is refused one fetch, and makes a signed
	// artifact.
	build := `version: 1
image: oci-archive:./images/builder.tar
egress:
  allow: ["allowed.invalid"]
steps:
  - name: build
    timeout: 2m
    run: |
      echo "` + marker + `"
      echo "<b>not bold</b>"
      wget -q -O - http://denied.invalid/dep.tar.gz 2>&1 || echo "fetch refused"
      mkdir -p out && printf '%s\n' "hello from the agent page test ` + marker + `" > out/hello.txt
  - name: test
    timeout: 1m
    run: grep -q "` + marker + `" out/hello.txt && echo "tests passed"
artifacts: ["out/hello.txt"]
`
	id1 := e.submit1(ci, e.source(build, nil))
	j1 := e.wait(ci, id1, 3*time.Minute, agenttest.Finished)
	if j1.State != jobs.StateSucceeded {
		t.Fatalf("job %s: %s (%s); log:\n%s", id1, j1.State, j1.Error, logOf(t, ci, id1))
	}
	t.Logf("job 1 succeeded after %v", time.Since(start).Round(time.Millisecond))

	// Without a session the page sends the browser to the login form; the
	// HTML carries the strict CSP.
	resp, _ := webGet(t, a.URL+"/", "")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
		t.Fatalf("GET / without a session: %d, Location %q; want 303 to /login", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, _ = webGet(t, a.URL+"/login", "")
	if got := resp.Header.Get("Content-Security-Policy"); got != wantCSP {
		t.Fatalf("login page CSP %q, want %q", got, wantCSP)
	}

	// With the session cookie the job page is served, under the same
	// policy; the static files are the only other thing it loads, and
	// the static route lists nothing.
	resp, page := webGet(t, a.URL+"/jobs/"+id1, e.submit)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Security-Policy") != wantCSP {
		t.Fatalf("job page with the cookie: %d, CSP %q", resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
	}
	if bytes.Contains(page, []byte("<script>")) || bytes.Contains(page, []byte(" style=")) {
		t.Fatalf("job page has inline script or style:\n%s", page)
	}
	for path, want := range map[string]int{"/static/app.js": http.StatusOK, "/static/app.css": http.StatusOK, "/static/": http.StatusNotFound, "/static/nope.js": http.StatusNotFound} {
		if resp, _ := webGet(t, a.URL+path, ""); resp.StatusCode != want {
			t.Fatalf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}

	ctx := newBrowser(t)

	// Log in through the form: a wrong token first, then the right one.
	webNavigate(t, ctx, a.URL+"/")
	webWait(t, ctx, 10*time.Second, `location.pathname === "/login" && !!document.getElementById("token")`)
	login := func(token string) {
		t.Helper()
		if err := chromedp.Do(ctx,
			chromedp.SetValue(chromedp.ID("token"), token),
			chromedp.Click(chromedp.CSS(`section.login button[type=submit]`)),
		); err != nil {
			t.Fatalf("login form: %v", err)
		}
	}
	login("not-a-token")
	webWait(t, ctx, 10*time.Second, `!!document.getElementById("login-error") && document.getElementById("login-error").textContent.includes("invalid")`)
	login(e.submit)
	webWait(t, ctx, 10*time.Second, `location.pathname === "/" && !!document.getElementById("jobs")`)

	// The job list: the job's row with its state and source.
	row := `document.querySelector('tr[data-job=` + jsString(id1) + `]')`
	webWait(t, ctx, 10*time.Second, row+` !== null`)
	if got := webEval[string](t, ctx, row+`.querySelector(".badge").textContent`); got != "succeeded" {
		t.Fatalf("job list: state badge %q, want succeeded", got)
	}
	if got := webEval[string](t, ctx, row+`.textContent`); !strings.Contains(got, "tarball sha256:") || !strings.Contains(got, "api (ci)") {
		t.Fatalf("job list row lacks the source or trigger: %q", got)
	}

	// The job page, reached by its link.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`tr[data-job="`+id1+`"] a`))); err != nil {
		t.Fatal(err)
	}
	webWait(t, ctx, 10*time.Second, `location.pathname === "/jobs/`+id1+`"`)
	// The log comes over the event stream, whole, as text.
	webWait(t, ctx, 30*time.Second, `document.getElementById("log").textContent.includes(`+jsString(marker)+`) && document.getElementById("log").textContent.includes("job succeeded")`)
	if !webEval[bool](t, ctx, `document.getElementById("log").textContent.includes("<b>not bold</b>") && document.querySelector("#log *") === null`) {
		t.Fatalf("log text was not inserted as text: %q", webEval[string](t, ctx, `document.getElementById("log").innerHTML`))
	}
	for _, step := range []string{"build", "test"} {
		if got := webEval[string](t, ctx, `(document.querySelector('tr[data-step="`+step+`"] .badge') || {}).textContent || ""`); got != "ok" {
			t.Fatalf("step %s: status %q on the page, want ok", step, got)
		}
	}
	if got := webEval[string](t, ctx, `(document.querySelector('tr[data-decision="deny"]') || {}).textContent || ""`); !strings.Contains(got, "denied.invalid") {
		t.Fatalf("egress table lacks the denied request: %q", webEval[string](t, ctx, `(document.getElementById("egress") || document.body).textContent`))
	}
	art := webEval[string](t, ctx, `(document.querySelector('tr[data-artifact="out/hello.txt"]') || {}).textContent || ""`)
	if !strings.Contains(art, artifactSHA) {
		t.Fatalf("artifact row %q lacks sha256 %s", art, artifactSHA)
	}
	if href := webEval[string](t, ctx, `document.querySelector('tr[data-artifact="out/hello.txt"] a').getAttribute("href")`); href != "/api/v1/jobs/"+id1+"/files/artifacts/out/hello.txt" {
		t.Fatalf("artifact download link %q", href)
	}
	prov := webEval[string](t, ctx, `document.getElementById("provenance").textContent`)
	for _, s := range []string{"provenance.intoto.json", "key:", "provenance.sigstore.json"} {
		if !strings.Contains(prov, s) {
			t.Fatalf("provenance section lacks %q:\n%s", s, prov)
		}
	}
	verifyCmd := webEval[string](t, ctx, `document.getElementById("verify-cmd").textContent`)

	// A full-page screenshot that is a real rendering.
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	checkRendering(t, shot)
	if p := os.Getenv("CLEANROOM_AGENT_SCREENSHOT"); p != "" {
		if err := os.WriteFile(p, shot, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot written to %s", p)
	}

	// The verify command as the page shows it checks the downloads.
	if !strings.HasPrefix(verifyCmd, "cleanroom verify hello.txt --provenance-bundle provenance.sigstore.json --key cosign.pub") {
		t.Fatalf("verify command %q", verifyCmd)
	}
	dl := t.TempDir()
	for _, name := range []string{"artifacts/out/hello.txt", "provenance.sigstore.json"} {
		b, err := ci.File(id1, name)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dl, filepath.Base(name)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(filepath.Join(keyDir, "cosign.pub"), filepath.Join(dl, "cosign.pub")); err != nil {
		t.Fatal(err)
	}
	verify := exec.Command("sh", "-c", verifyCmd)
	verify.Dir = dl
	verify.Env = append(os.Environ(), "PATH="+filepath.Dir(e.bin)+":"+os.Getenv("PATH"))
	if out, err := verify.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", verifyCmd, err, out)
	}

	// Job 2: its page is open while it runs; the second line comes 3 s
	// after the first, so it can only arrive over the live stream.
	first, second := "live-first-"+hex.EncodeToString(nonce[:]), "live-second-"+hex.EncodeToString(nonce[:])
	id2 := e.submit1(ci, e.source(pipeline("echo "+first+"\nsleep 3\necho "+second, ""), nil))
	e.wait(ci, id2, 2*time.Minute, func(j jobs.Job) bool { return j.State != jobs.StateQueued })
	webNavigate(t, ctx, a.URL+"/jobs/"+id2)
	logHas := func(s string) string {
		return `document.getElementById("log").textContent.includes(` + jsString(s) + `)`
	}
	webWait(t, ctx, time.Minute, logHas(first))
	if webEval[bool](t, ctx, logHas(second)) {
		t.Fatalf("the second line was there with the first: the page did not show the log live")
	}
	if j2, err := ci.Job(id2); err != nil || jobs.Terminal(j2.State) {
		t.Fatalf("job 2 already %s (%v) when its first line showed", j2.State, err)
	}
	webWait(t, ctx, 30*time.Second, logHas(second))
	// At the end the page reloads to show the finished job.
	webWait(t, ctx, time.Minute, `document.getElementById("state").textContent === "succeeded" && document.querySelector('tr[data-step="build"]') !== null`)

	// Re-run the finished job from its page, then cancel the re-run from
	// its own page while it runs.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("rerun"))); err != nil {
		t.Fatalf("re-run button: %v", err)
	}
	webWait(t, ctx, 20*time.Second, `location.pathname !== "/jobs/`+id2+`" && document.body.textContent.includes("Re-run of") && !!document.getElementById("cancel")`)
	rerunID := strings.TrimPrefix(webEval[string](t, ctx, `location.pathname`), "/jobs/")
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("cancel"))); err != nil {
		t.Fatalf("cancel button: %v", err)
	}
	if j := e.wait(ci, rerunID, time.Minute, agenttest.Finished); j.State != jobs.StateCancelled || j.Trigger.RerunOf != id2 || j.Error != "cancelled by token ci" {
		t.Fatalf("re-run cancelled from the page: %+v", j)
	}
	webWait(t, ctx, 30*time.Second, `document.getElementById("state").textContent === "cancelled" && !!document.getElementById("rerun")`)

	// Sign out: the session is gone.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`form.logout button`))); err != nil {
		t.Fatal(err)
	}
	webWait(t, ctx, 10*time.Second, `location.pathname === "/login"`)
	webNavigate(t, ctx, a.URL+"/jobs/"+id1)
	webWait(t, ctx, 10*time.Second, `location.pathname === "/login" && !!document.getElementById("token")`)

	// The drain path ends cleanly; the env then checks for residue.
	if err := a.Stop(2 * time.Minute); err != nil {
		t.Fatalf("agent after SIGTERM: %v", err)
	}
	t.Logf("done in %v", time.Since(start).Round(time.Millisecond))
}

// checkRendering fails unless png is a page-sized image with the many
// colours of rendered text and badges (a blank or failed render is one
// or two colours).
func checkRendering(t *testing.T, b []byte) {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	bounds := img.Bounds()
	if bounds.Dx() < 800 || bounds.Dy() < 600 {
		t.Fatalf("screenshot is %dx%d, want a page-sized rendering", bounds.Dx(), bounds.Dy())
	}
	colours := map[uint32]bool{}
	for y := bounds.Min.Y; y < bounds.Max.Y; y += 2 {
		for x := bounds.Min.X; x < bounds.Max.X; x += 2 {
			r, g, b, _ := img.At(x, y).RGBA()
			colours[(r>>8)<<16|(g>>8)<<8|b>>8] = true
		}
	}
	if len(colours) < 64 {
		t.Fatalf("screenshot has %d colours; want a real rendering", len(colours))
	}
	t.Logf("screenshot %dx%d, %d colours", bounds.Dx(), bounds.Dy(), len(colours))
}
