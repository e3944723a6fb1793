package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const (
	sha     = "9f1c7c5e0d3b2a1f4e5d6c7b8a9f0e1d2c3b4a59"
	zeroSHA = "0000000000000000000000000000000000000000"
	repo    = "https://git.example.org/acme/widget.git"
)

var secret = []byte("s3cret-for-tests")

func githubHook() Hook {
	return Hook{Name: "widget", Provider: GitHub, Secret: secret, Repository: repo}
}

func gitlabHook() Hook {
	return Hook{Name: "widget", Provider: GitLab, Secret: secret, Repository: repo}
}

func githubBody(ref, after, cloneURL string, deleted bool) string {
	d := "false"
	if deleted {
		d = "true"
	}
	return `{"ref":"` + ref + `","before":"` + zeroSHA + `","after":"` + after + `","deleted":` + d +
		`,"repository":{"clone_url":"` + cloneURL + `","html_url":"https://git.example.org/acme/widget"},` +
		`"pusher":{"name":"alice","email":"alice@example.org"}}`
}

func gitlabBody(ref, after, checkout, httpURL string) string {
	co := "null"
	if checkout != "" {
		co = `"` + checkout + `"`
	}
	return `{"object_kind":"push","ref":"` + ref + `","before":"` + zeroSHA + `","after":"` + after +
		`","checkout_sha":` + co + `,"user_username":"bob","project":{"git_http_url":"` + httpURL +
		`","web_url":"https://git.example.org/acme/widget"}}`
}

func sign(key []byte, body string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(body))
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func githubReq(event, body string, key []byte) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/hooks/widget", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("X-GitHub-Event", event)
	r.Header.Set("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
	if key != nil {
		r.Header.Set("X-Hub-Signature-256", sign(key, body))
	}
	return r
}

func gitlabReq(event, body, token string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/hooks/widget", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("X-Gitlab-Event", event)
	r.Header.Set("X-Gitlab-Event-UUID", "13792a34-cac6-4fda-95a8-c58e00a3954e")
	if token != "" {
		r.Header.Set("X-Gitlab-Token", token)
	}
	return r
}

func TestGitHubPush(t *testing.T) {
	body := githubBody("refs/heads/main", sha, repo, false)
	p, err := Parse(githubReq("push", body, secret), githubHook(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := Push{Provider: GitHub, Hook: "widget", Repository: repo, Ref: "refs/heads/main", Commit: sha,
		Pusher: "alice", DeliveryID: "72d3162e-cc78-11e3-81ab-4c9367dc0958", BodySHA256: sha256Hex([]byte(body))}
	if p != want {
		t.Fatalf("got %+v\nwant %+v", p, want)
	}
	if HTTPStatus(err) != http.StatusAccepted {
		t.Fatal(HTTPStatus(err))
	}
}

func TestGitHubHTMLURLAndNormalisation(t *testing.T) {
	// No clone_url: html_url + ".git" must do, and the configured URL may
	// differ in host case, default port and trailing slash.
	body := `{"ref":"refs/heads/dev","after":"` + sha + `","repository":{"html_url":"https://git.example.org/acme/widget"},"pusher":{"name":"a"}}`
	h := githubHook()
	h.Repository = "HTTPS://Git.Example.org:443/acme/widget/"
	p, err := Parse(githubReq("push", body, secret), h, 0)
	if err != nil {
		t.Fatal(err)
	}
	if p.Repository != h.Repository {
		t.Fatalf("Repository = %q, want the configured URL", p.Repository)
	}
}

func TestGitHubAnnotatedTagBuildsTheCommit(t *testing.T) {
	tagObj := strings.Repeat("ab", 20)
	body := `{"ref":"refs/tags/v1.2.0","after":"` + tagObj + `","head_commit":{"id":"` + sha + `"},"repository":{"clone_url":"` + repo + `"},"pusher":{"name":"a"}}`
	h := githubHook()
	h.Refs = []string{"refs/tags/v*"}
	p, err := Parse(githubReq("push", body, secret), h, 0)
	if err != nil {
		t.Fatal(err)
	}
	if p.Commit != sha {
		t.Fatalf("Commit = %s, want the head commit %s", p.Commit, sha)
	}
}

func TestGitLabPush(t *testing.T) {
	body := gitlabBody("refs/heads/main", sha, sha, repo)
	p, err := Parse(gitlabReq("Push Hook", body, string(secret)), gitlabHook(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := Push{Provider: GitLab, Hook: "widget", Repository: repo, Ref: "refs/heads/main", Commit: sha,
		Pusher: "bob", DeliveryID: "13792a34-cac6-4fda-95a8-c58e00a3954e", BodySHA256: sha256Hex([]byte(body))}
	if p != want {
		t.Fatalf("got %+v\nwant %+v", p, want)
	}
}

func TestGitLabTagPushUsesCheckoutSHA(t *testing.T) {
	tagObj := strings.Repeat("cd", 20)
	body := strings.Replace(gitlabBody("refs/tags/v2", tagObj, sha, repo), `"push"`, `"tag_push"`, 1)
	h := gitlabHook()
	h.Refs = []string{"refs/tags/v*"}
	p, err := Parse(gitlabReq("Tag Push Hook", body, string(secret)), h, 0)
	if err != nil {
		t.Fatal(err)
	}
	if p.Commit != sha {
		t.Fatalf("Commit = %s, want checkout_sha %s", p.Commit, sha)
	}
}

func TestWrongSignature(t *testing.T) {
	body := githubBody("refs/heads/main", sha, repo, false)
	_, err := Parse(githubReq("push", body, []byte("another key")), githubHook(), 0)
	wantErr(t, err, ErrSignature, http.StatusUnauthorized, "does not match")

	// A valid signature of a different body.
	r := githubReq("push", body, nil)
	r.Header.Set("X-Hub-Signature-256", sign(secret, body+" "))
	_, err = Parse(r, githubHook(), 0)
	wantErr(t, err, ErrSignature, http.StatusUnauthorized, "does not match")

	r = githubReq("push", body, nil)
	r.Header.Set("X-Hub-Signature-256", "sha1=abcdef")
	_, err = Parse(r, githubHook(), 0)
	wantErr(t, err, ErrSignature, http.StatusUnauthorized, "malformed")

	_, err = Parse(gitlabReq("Push Hook", gitlabBody("refs/heads/main", sha, sha, repo), "s3cret-for-test"), gitlabHook(), 0)
	wantErr(t, err, ErrSignature, http.StatusUnauthorized, "does not match")
}

func TestMissingHeader(t *testing.T) {
	_, err := Parse(githubReq("push", githubBody("refs/heads/main", sha, repo, false), nil), githubHook(), 0)
	wantErr(t, err, ErrSignature, http.StatusUnauthorized, "missing X-Hub-Signature-256")

	_, err = Parse(gitlabReq("Push Hook", gitlabBody("refs/heads/main", sha, sha, repo), ""), gitlabHook(), 0)
	wantErr(t, err, ErrSignature, http.StatusUnauthorized, "missing X-Gitlab-Token")

	// Authenticated, but which event is it?
	r := githubReq("", githubBody("refs/heads/main", sha, repo, false), secret)
	_, err = Parse(r, githubHook(), 0)
	wantErr(t, err, nil, http.StatusBadRequest, "missing X-GitHub-Event")
}

func TestEmptySecretRefusesEverything(t *testing.T) {
	body := githubBody("refs/heads/main", sha, repo, false)
	h := githubHook()
	h.Secret = nil
	// Even a delivery "signed" with the empty key.
	_, err := Parse(githubReq("push", body, []byte{}), h, 0)
	wantErr(t, err, ErrSignature, http.StatusUnauthorized, "no secret configured")

	g := gitlabHook()
	g.Secret = []byte{}
	r := gitlabReq("Push Hook", gitlabBody("refs/heads/main", sha, sha, repo), "")
	r.Header["X-Gitlab-Token"] = []string{""}
	_, err = Parse(r, g, 0)
	wantErr(t, err, ErrSignature, http.StatusUnauthorized, "no secret configured")

	if err := h.Check(); err == nil {
		t.Fatal("Check accepted a hook without a secret")
	}
}

func TestPingIgnored(t *testing.T) {
	body := `{"zen":"Keep it logically awesome.","hook_id":1}`
	_, err := Parse(githubReq("ping", body, secret), githubHook(), 0)
	wantIgnored(t, err, "ping")

	_, err = Parse(gitlabReq("Merge Request Hook", `{"object_kind":"merge_request"}`, string(secret)), gitlabHook(), 0)
	wantIgnored(t, err, "merge requests are not built by this hook")

	// An unauthenticated ping is not "ignored": it is refused.
	_, err = Parse(githubReq("ping", body, []byte("wrong")), githubHook(), 0)
	wantErr(t, err, ErrSignature, http.StatusUnauthorized, "")
}

func TestDeletionIgnored(t *testing.T) {
	_, err := Parse(githubReq("push", githubBody("refs/heads/gone", zeroSHA, repo, true), secret), githubHook(), 0)
	wantIgnored(t, err, "refs/heads/gone was deleted")

	_, err = Parse(gitlabReq("Push Hook", gitlabBody("refs/heads/gone", zeroSHA, "", repo), string(secret)), gitlabHook(), 0)
	wantIgnored(t, err, "refs/heads/gone was deleted")
}

func TestRefNotMatchedIgnored(t *testing.T) {
	// Default: every branch, including names with slashes, but no tags.
	_, err := Parse(githubReq("push", githubBody("refs/heads/feature/x", sha, repo, false), secret), githubHook(), 0)
	if err != nil {
		t.Fatalf("default refs refused a branch with a slash: %v", err)
	}
	_, err = Parse(githubReq("push", githubBody("refs/tags/v1", sha, repo, false), secret), githubHook(), 0)
	wantIgnored(t, err, "not a branch")

	h := githubHook()
	h.Refs = []string{"refs/heads/main", "refs/heads/release/*", "refs/heads/feature/**"}
	for ref, ok := range map[string]bool{
		"refs/heads/main":          true,
		"refs/heads/release/1.0":   true,
		"refs/heads/release/1/rc":  false, // * stays in a segment
		"refs/heads/feature/a/b/c": true,  // ** crosses them (internal/glob)
		"refs/heads/dev":           false,
		"refs/heads/release":       false,
		"refs/tags/v1":             false,
	} {
		_, err := Parse(gitlabReqFor(ref), gitlabHookWith(h.Refs), 0)
		if ok && err != nil {
			t.Errorf("%s: %v", ref, err)
		}
		if !ok {
			wantIgnored(t, err, "matches none of the hook's refs")
		}
	}
}

func gitlabReqFor(ref string) *http.Request {
	return gitlabReq("Push Hook", gitlabBody(ref, sha, sha, repo), string(secret))
}

func gitlabHookWith(refs []string) Hook {
	h := gitlabHook()
	h.Refs = refs
	return h
}

func TestWrongRepository(t *testing.T) {
	other := "https://git.example.org/acme/other.git"
	body := `{"ref":"refs/heads/main","after":"` + sha + `","repository":{"clone_url":"` + other + `","html_url":"https://git.example.org/acme/other"},"pusher":{"name":"a"}}`
	_, err := Parse(githubReq("push", body, secret), githubHook(), 0)
	wantErr(t, err, ErrRepository, http.StatusForbidden, "acme/other")

	// Even a deletion for the wrong repository is refused, not ignored.
	body = `{"object_kind":"push","ref":"refs/heads/x","after":"` + zeroSHA + `","project":{"git_http_url":"` + other + `"}}`
	_, err = Parse(gitlabReq("Push Hook", body, string(secret)), gitlabHook(), 0)
	wantErr(t, err, ErrRepository, http.StatusForbidden, "acme/other")

	// No repository at all.
	body = `{"ref":"refs/heads/main","after":"` + sha + `"}`
	_, err = Parse(githubReq("push", body, secret), githubHook(), 0)
	wantErr(t, err, ErrRepository, http.StatusForbidden, "names no repository")

	// Another host with the same path.
	body = githubBody("refs/heads/main", sha, "https://evil.example.org/acme/widget.git", false)
	body = strings.Replace(body, `"html_url":"https://git.example.org/acme/widget"`, `"html_url":"https://evil.example.org/acme/widget"`, 1)
	_, err = Parse(githubReq("push", body, secret), githubHook(), 0)
	wantErr(t, err, ErrRepository, http.StatusForbidden, "evil.example.org")
}

func TestBodyTooLarge(t *testing.T) {
	body := githubBody("refs/heads/main", sha, repo, false)
	limit := int64(len(body) - 1)
	_, err := Parse(githubReq("push", body, secret), githubHook(), limit)
	wantErr(t, err, ErrTooLarge, http.StatusBadRequest, "exceeds the limit")

	// Without a Content-Length the limit still holds while reading.
	r := githubReq("push", body, secret)
	r.ContentLength = -1
	_, err = Parse(r, githubHook(), limit)
	wantErr(t, err, ErrTooLarge, http.StatusBadRequest, "exceeds the limit")

	// Exactly at the limit is fine.
	if _, err := Parse(githubReq("push", body, secret), githubHook(), int64(len(body))); err != nil {
		t.Fatal(err)
	}
}

func TestMalformed(t *testing.T) {
	body := `{"ref":"refs/heads/main",`
	_, err := Parse(githubReq("push", body, secret), githubHook(), 0)
	wantErr(t, err, nil, http.StatusBadRequest, "malformed JSON")

	_, err = Parse(gitlabReq("Push Hook", `{"object_kind":"push"} {}`, string(secret)), gitlabHook(), 0)
	wantErr(t, err, nil, http.StatusBadRequest, "trailing data")

	body = githubBody("refs/heads/main", "not-a-sha", repo, false)
	_, err = Parse(githubReq("push", body, secret), githubHook(), 0)
	wantErr(t, err, nil, http.StatusBadRequest, "not 40 hex")

	body = githubBody("refs/heads/main", "", repo, false)
	_, err = Parse(githubReq("push", body, secret), githubHook(), 0)
	wantErr(t, err, nil, http.StatusBadRequest, "no commit")

	body = githubBody("", sha, repo, false)
	_, err = Parse(githubReq("push", body, secret), githubHook(), 0)
	wantErr(t, err, nil, http.StatusBadRequest, "no ref")

	r := githubReq("push", githubBody("refs/heads/main", sha, repo, false), secret)
	r.Method = http.MethodGet
	_, err = Parse(r, githubHook(), 0)
	wantErr(t, err, nil, http.StatusBadRequest, "POST")
}

func TestCheck(t *testing.T) {
	for name, h := range map[string]Hook{
		"provider":   {Name: "x", Provider: "bitbucket", Secret: secret, Repository: repo},
		"repository": {Name: "x", Provider: GitHub, Secret: secret, Repository: "git@git.example.org:acme/widget.git"},
		"pattern":    {Name: "x", Provider: GitHub, Secret: secret, Repository: repo, Refs: []string{"refs/heads/["}},
	} {
		if err := h.Check(); err == nil {
			t.Errorf("%s: Check accepted %+v", name, h)
		}
	}
	if err := githubHook().Check(); err != nil {
		t.Fatal(err)
	}
	if githubHook().PipelinePath() != "cleanroom.yaml" {
		t.Fatal(githubHook().PipelinePath())
	}
}

func wantErr(t *testing.T, err, is error, status int, substr string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v", is)
	}
	if is != nil && !errors.Is(err, is) {
		t.Fatalf("error %q does not wrap %q", err, is)
	}
	var ig *IgnoredError
	if errors.As(err, &ig) {
		t.Fatalf("error %q is an IgnoredError", err)
	}
	if got := HTTPStatus(err); got != status {
		t.Fatalf("HTTPStatus(%q) = %d, want %d", err, got, status)
	}
	if !strings.Contains(err.Error(), substr) {
		t.Fatalf("error %q does not say %q", err, substr)
	}
}

func wantIgnored(t *testing.T, err error, substr string) {
	t.Helper()
	var ig *IgnoredError
	if !errors.As(err, &ig) {
		t.Fatalf("error %v, want an IgnoredError", err)
	}
	if errors.Is(err, ErrSignature) || HTTPStatus(err) != http.StatusAccepted {
		t.Fatalf("ignored delivery %q maps to %d", err, HTTPStatus(err))
	}
	if !strings.Contains(ig.Reason, substr) {
		t.Fatalf("reason %q does not say %q", ig.Reason, substr)
	}
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
