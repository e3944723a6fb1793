// Package webhook authenticates and parses the push webhooks of GitHub and
// GitLab for the self-hosted agent.
//
// A delivery is authenticated before a byte of it is parsed, against the
// secret of the hook it was sent to, and then it must name the repository
// that hook builds: a secret leaked for one repository must never start a
// build of another. The agent always clones the configured URL
// (Hook.Repository), never a URL taken from the payload, so a delivery can
// choose which commit of that repository is built, nothing else.
package webhook

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"unicode"

	"github.com/cleanroom-ci/cleanroom/internal/glob"
)

// Provider names the forge that sends a hook's deliveries.
type Provider string

// The supported providers.
const (
	GitHub Provider = "github"
	GitLab Provider = "gitlab"
)

// DefaultPipeline is the pipeline path used when Hook.Pipeline is empty.
const DefaultPipeline = "cleanroom.yaml"

// DefaultMaxBody bounds a delivery when Parse is given no limit: GitHub
// caps its payloads at 25 MB.
const DefaultMaxBody = 25 << 20

// Hook is one configured webhook endpoint.
type Hook struct {
	Name     string
	Provider Provider
	// Secret is the HMAC key (GitHub) or the secret token (GitLab). An
	// empty Secret refuses every delivery: a missing setting must never
	// mean "no authentication".
	Secret []byte
	// Repository is the clone URL the agent builds
	// (https://host/owner/repo.git); every delivery must name it.
	Repository string
	// Refs are globs (internal/glob) on the full ref ("refs/heads/main",
	// "refs/heads/release/*", "refs/heads/feature/**", "refs/tags/v*").
	// Empty means every branch:
	// any ref under refs/heads/, including names with slashes, and no
	// tags.
	Refs []string
	// Pipeline is the pipeline's path in the repository; see PipelinePath.
	Pipeline string
	// PullRequests turns on builds of pull requests (GitHub) and merge
	// requests (GitLab) whose base branch matches Refs; a request from a
	// fork is marked untrusted (Push.Fork).
	PullRequests bool
}

// PipelinePath returns Pipeline, or DefaultPipeline when it is empty.
func (h Hook) PipelinePath() string {
	if h.Pipeline == "" {
		return DefaultPipeline
	}
	return h.Pipeline
}

// Check reports a misconfigured hook. Parse calls it on every delivery (so
// a bad hook refuses everything); the agent should also call it at start-up
// to fail early.
func (h Hook) Check() error {
	switch h.Provider {
	case GitHub, GitLab:
	default:
		return fmt.Errorf("webhook %q: provider %q: want %q or %q", h.Name, h.Provider, GitHub, GitLab)
	}
	if len(h.Secret) == 0 {
		return fmt.Errorf("webhook %q has no secret configured, so every delivery is refused", h.Name)
	}
	if _, err := normalizeRepo(h.Repository); err != nil {
		return fmt.Errorf("webhook %q: repository: %v", h.Name, err)
	}
	for _, p := range h.Refs {
		if _, err := glob.Compile(p); err != nil {
			return fmt.Errorf("webhook %q: ref pattern %v", h.Name, err)
		}
	}
	return nil
}

// Push is an authenticated push that should be built.
type Push struct {
	Provider Provider
	Hook     string // Hook.Name
	// Repository is the hook's configured Repository (not the payload's
	// URL): the one to clone.
	Repository string
	Ref        string // full ref, e.g. refs/heads/main
	Commit     string // 40 lowercase hex digits
	Pusher     string // user name as the provider reported it; informative only
	DeliveryID string // the provider's delivery id, for logs and deduplication
	// BodySHA256 is the hex digest of the authenticated body: a replay
	// of one delivery under a new delivery id has the same digest.
	BodySHA256 string
	// PullRequest is the number of the pull or merge request built (0 for
	// a push); then Ref is the forge's ref of its head in the hook's
	// repository (refs/pull/N/head, refs/merge-requests/N/head), BaseRef
	// the branch it targets, and Fork says whether its head comes from
	// another repository: someone who cannot push to this one.
	PullRequest int
	BaseRef     string
	Fork        bool
}

// ErrSignature is wrapped by every authentication failure: a missing or
// wrong signature or token, or a hook without a secret. Answer 401.
var ErrSignature = errors.New("webhook authentication failed")

// ErrRepository is wrapped when an authenticated delivery names another
// repository than the hook's. Answer 403.
var ErrRepository = errors.New("webhook delivery is for another repository")

// ErrTooLarge is wrapped when the body exceeds the limit given to Parse.
// It is a client error like any malformed delivery (400 by HTTPStatus).
var ErrTooLarge = errors.New("webhook body too large")

// IgnoredError is returned for a valid, authenticated delivery that is not
// a build: a ping, another event, a branch deletion, a ref the hook does
// not build. Answer 202 with the reason, so the forge shows the delivery as
// received and the reason is visible in its delivery log.
type IgnoredError struct{ Reason string }

func (e *IgnoredError) Error() string { return "webhook delivery ignored: " + e.Reason }

// HTTPStatus maps Parse's result to the status to answer with: nil → 202
// (the build is queued, not done), IgnoredError → 202, ErrSignature → 401,
// ErrRepository → 403, anything else → 400.
func HTTPStatus(err error) int {
	var ig *IgnoredError
	switch {
	case err == nil, errors.As(err, &ig):
		return http.StatusAccepted
	case errors.Is(err, ErrSignature):
		return http.StatusUnauthorized
	case errors.Is(err, ErrRepository):
		return http.StatusForbidden
	}
	return http.StatusBadRequest
}

// Parse authenticates a delivery to hook and returns the push to build.
// The body is read up to maxBody bytes (DefaultMaxBody when maxBody <= 0)
// and authenticated before it is parsed. See the error variables and
// IgnoredError for the ways it can fail.
func Parse(r *http.Request, hook Hook, maxBody int64) (Push, error) {
	if len(hook.Secret) == 0 {
		return Push{}, fmt.Errorf("%w: webhook %q has no secret configured, so every delivery is refused", ErrSignature, hook.Name)
	}
	if err := hook.Check(); err != nil {
		return Push{}, err
	}
	if r.Method != http.MethodPost {
		return Push{}, fmt.Errorf("webhook %q: method %s: deliveries are POST requests", hook.Name, r.Method)
	}
	body, err := readBody(r, maxBody)
	if err != nil {
		return Push{}, fmt.Errorf("webhook %q: %w", hook.Name, err)
	}
	var p Push
	switch hook.Provider {
	case GitHub:
		p, err = parseGitHub(r.Header, body, hook)
	default:
		p, err = parseGitLab(r.Header, body, hook)
	}
	if err == nil {
		sum := sha256.Sum256(body)
		p.BodySHA256 = hex.EncodeToString(sum[:])
	}
	return p, err
}

func readBody(r *http.Request, maxBody int64) ([]byte, error) {
	if maxBody <= 0 {
		maxBody = DefaultMaxBody
	}
	tooLarge := fmt.Errorf("%w: the body exceeds the limit of %d bytes", ErrTooLarge, maxBody)
	if r.ContentLength > maxBody {
		return nil, tooLarge
	}
	if r.Body == nil {
		return nil, errors.New("empty body")
	}
	// One byte more than allowed tells "exactly at the limit" from "over".
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("reading the body: %v", err)
	}
	if int64(len(body)) > maxBody {
		return nil, tooLarge
	}
	return body, nil
}

func ignored(format string, args ...any) error {
	return &IgnoredError{Reason: fmt.Sprintf(format, args...)}
}

// --- GitHub ---

type githubPush struct {
	Ref     string `json:"ref"`
	After   string `json:"after"`
	Deleted bool   `json:"deleted"`
	Repo    struct {
		CloneURL string `json:"clone_url"`
		HTMLURL  string `json:"html_url"`
	} `json:"repository"`
	Pusher struct {
		Name string `json:"name"`
	} `json:"pusher"`
	HeadCommit *struct {
		ID string `json:"id"`
	} `json:"head_commit"`
}

func parseGitHub(h http.Header, body []byte, hook Hook) (Push, error) {
	sig := h.Get("X-Hub-Signature-256")
	if sig == "" {
		return Push{}, fmt.Errorf("%w: webhook %q: missing X-Hub-Signature-256 header (is the hook's secret set on GitHub?)", ErrSignature, hook.Name)
	}
	given, err := hex.DecodeString(strings.TrimPrefix(sig, "sha256="))
	if !strings.HasPrefix(sig, "sha256=") || err != nil {
		return Push{}, fmt.Errorf("%w: webhook %q: malformed X-Hub-Signature-256 header (want sha256=<hex>)", ErrSignature, hook.Name)
	}
	mac := hmac.New(sha256.New, hook.Secret)
	mac.Write(body)
	if !hmac.Equal(mac.Sum(nil), given) {
		return Push{}, fmt.Errorf("%w: webhook %q: X-Hub-Signature-256 does not match the body and the hook's secret", ErrSignature, hook.Name)
	}
	// Authenticated from here on.
	delivery := clean(h.Get("X-GitHub-Delivery"), 128)
	switch ev := h.Get("X-GitHub-Event"); ev {
	case "push":
	case "pull_request":
		if !hook.PullRequests {
			return Push{}, ignored("pull requests are not built by this hook (pull_requests: false)")
		}
		return parseGitHubPR(body, hook, delivery)
	case "ping":
		return Push{}, ignored("ping")
	case "":
		return Push{}, fmt.Errorf("webhook %q: missing X-GitHub-Event header", hook.Name)
	default:
		return Push{}, ignored("event %q is not a push", clean(ev, 64))
	}
	var p githubPush
	if err := decode(body, &p); err != nil {
		return Push{}, fmt.Errorf("webhook %q: %v", hook.Name, err)
	}
	commit := p.After
	if strings.HasPrefix(p.Ref, "refs/tags/") && p.HeadCommit != nil && p.HeadCommit.ID != "" {
		// For an annotated tag, after is the tag object; build the
		// commit it points to.
		commit = p.HeadCommit.ID
	}
	urls := []string{p.Repo.CloneURL}
	if p.Repo.HTMLURL != "" {
		urls = append(urls, p.Repo.HTMLURL+".git")
	}
	return finish(hook, Push{
		Provider:   GitHub,
		Ref:        p.Ref,
		Commit:     commit,
		Pusher:     clean(p.Pusher.Name, 256),
		DeliveryID: delivery,
	}, urls, p.Deleted)
}

// --- GitLab ---

type gitlabPush struct {
	ObjectKind  string  `json:"object_kind"`
	Ref         string  `json:"ref"`
	After       string  `json:"after"`
	CheckoutSHA *string `json:"checkout_sha"`
	User        string  `json:"user_username"`
	Project     struct {
		GitHTTPURL string `json:"git_http_url"`
		WebURL     string `json:"web_url"`
	} `json:"project"`
}

func parseGitLab(h http.Header, body []byte, hook Hook) (Push, error) {
	tok, ok := h["X-Gitlab-Token"]
	if !ok || len(tok) != 1 || tok[0] == "" {
		return Push{}, fmt.Errorf("%w: webhook %q: missing X-Gitlab-Token header (is the hook's secret token set on GitLab?)", ErrSignature, hook.Name)
	}
	// Compare digests so that the comparison takes the same time whatever
	// the lengths; ConstantTimeCompare alone returns early on a length
	// mismatch.
	a, b := sha256.Sum256([]byte(tok[0])), sha256.Sum256(hook.Secret)
	if subtle.ConstantTimeCompare(a[:], b[:]) != 1 {
		return Push{}, fmt.Errorf("%w: webhook %q: X-Gitlab-Token does not match the hook's secret", ErrSignature, hook.Name)
	}
	delivery := clean(h.Get("X-Gitlab-Event-UUID"), 128)
	switch ev := h.Get("X-Gitlab-Event"); ev {
	case "Push Hook", "Tag Push Hook":
	case "Merge Request Hook":
		if !hook.PullRequests {
			return Push{}, ignored("merge requests are not built by this hook (pull_requests: false)")
		}
		return parseGitLabMR(body, hook, delivery)
	case "":
		return Push{}, fmt.Errorf("webhook %q: missing X-Gitlab-Event header", hook.Name)
	default:
		return Push{}, ignored("event %q is not a push", clean(ev, 64))
	}
	var p gitlabPush
	if err := decode(body, &p); err != nil {
		return Push{}, fmt.Errorf("webhook %q: %v", hook.Name, err)
	}
	if p.ObjectKind != "push" && p.ObjectKind != "tag_push" {
		return Push{}, ignored("object_kind %q is not a push", clean(p.ObjectKind, 64))
	}
	commit := p.After
	deleted := isZeroSHA(p.After)
	if p.CheckoutSHA != nil && *p.CheckoutSHA != "" {
		// The tip to build: for an annotated tag, after is the tag
		// object and checkout_sha the commit it points to.
		commit = *p.CheckoutSHA
	}
	return finish(hook, Push{
		Provider:   GitLab,
		Ref:        p.Ref,
		Commit:     commit,
		Pusher:     clean(p.User, 256),
		DeliveryID: delivery,
	}, []string{p.Project.GitHTTPURL, p.Project.WebURL}, deleted)
}

// --- common ---

func decode(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("malformed JSON payload: %v", err)
	}
	if dec.More() {
		return errors.New("malformed JSON payload: trailing data after the object")
	}
	return nil
}

// finish applies the checks common to both providers, in order of
// importance: a delivery for another repository is refused (403) even when
// it would otherwise be ignored.
func finish(hook Hook, p Push, repoURLs []string, deleted bool) (Push, error) {
	want, _ := normalizeRepo(hook.Repository) // Check validated it
	var named []string
	match := false
	for _, u := range repoURLs {
		if u == "" {
			continue
		}
		named = append(named, clean(u, 256))
		if n, err := normalizeRepo(u); err == nil && n == want {
			match = true
		}
	}
	if !match {
		if len(named) == 0 {
			return Push{}, fmt.Errorf("%w: webhook %q builds %s, but the delivery names no repository", ErrRepository, hook.Name, hook.Repository)
		}
		return Push{}, fmt.Errorf("%w: webhook %q builds %s, but the delivery is for %s", ErrRepository, hook.Name, hook.Repository, strings.Join(named, " / "))
	}
	if p.Ref == "" {
		return Push{}, fmt.Errorf("webhook %q: the payload has no ref", hook.Name)
	}
	if !strings.HasPrefix(p.Ref, "refs/") || len(p.Ref) > 1024 || strings.IndexFunc(p.Ref, badRefRune) >= 0 {
		return Push{}, fmt.Errorf("webhook %q: malformed ref %q", hook.Name, clean(p.Ref, 256))
	}
	if deleted || isZeroSHA(p.Commit) {
		return Push{}, ignored("%s was deleted", p.Ref)
	}
	// A pull request is built when the branch it targets is.
	matchRef := p.Ref
	if p.BaseRef != "" {
		matchRef = p.BaseRef
	}
	if !refMatches(hook.Refs, matchRef) {
		if len(hook.Refs) == 0 {
			return Push{}, ignored("%s is not a branch (the hook builds refs/heads/*)", matchRef)
		}
		return Push{}, ignored("%s matches none of the hook's refs (%s)", matchRef, strings.Join(hook.Refs, ", "))
	}
	if p.Commit == "" {
		return Push{}, fmt.Errorf("webhook %q: the payload names no commit", hook.Name)
	}
	if !isSHA1(p.Commit) {
		return Push{}, fmt.Errorf("webhook %q: commit %q is not 40 hex digits", hook.Name, clean(p.Commit, 80))
	}
	p.Commit = strings.ToLower(p.Commit)
	p.Hook = hook.Name
	p.Repository = hook.Repository
	return p, nil
}

func refMatches(patterns []string, ref string) bool {
	if len(patterns) == 0 {
		return strings.HasPrefix(ref, "refs/heads/")
	}
	for _, pat := range patterns {
		if g, err := glob.Compile(pat); err == nil && g.Match(ref) {
			return true
		}
	}
	return false
}

// normalizeRepo reduces a repository URL to a comparable form: scheme and
// host lowercased, default port dropped, userinfo, query and fragment
// dropped, trailing "/" and ".git" removed. The path keeps its case:
// whether it matters is the forge's business, and a false mismatch is the
// safe side.
// NormalizeRepo is the form repositories are compared in: lower-case
// scheme and host, no default port, no trailing "/" or ".git".
func NormalizeRepo(raw string) (string, error) { return normalizeRepo(raw) }

func normalizeRepo(raw string) (string, error) {
	if raw == "" {
		return "", errors.New("empty URL")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "https" && scheme != "http" {
		return "", fmt.Errorf("%q: want an http(s) URL", raw)
	}
	if u.Host == "" || u.Opaque != "" {
		return "", fmt.Errorf("%q: no host", raw)
	}
	host := strings.ToLower(u.Host)
	host = strings.TrimSuffix(host, map[string]string{"https": ":443", "http": ":80"}[scheme])
	p := u.Path
	for {
		q := strings.TrimSuffix(strings.TrimSuffix(p, "/"), ".git")
		if q == p {
			break
		}
		p = q
	}
	if p == "" {
		return "", fmt.Errorf("%q: no repository path", raw)
	}
	return scheme + "://" + host + p, nil
}

func isSHA1(s string) bool {
	if len(s) != 40 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

func isZeroSHA(s string) bool {
	return s != "" && strings.Trim(s, "0") == ""
}

func badRefRune(r rune) bool {
	return r < 0x20 || r == 0x7f || r == ' ' || r == '\\'
}

// clean makes a payload string safe for logs: no control characters, and
// at most n bytes.
func clean(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
	if len(s) > n {
		s = strings.ToValidUTF8(s[:n], "") + "…"
	}
	return s
}
