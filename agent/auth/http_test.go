package auth

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

type env struct {
	srv     *httptest.Server
	secrets map[Scope]string
	auth    *Authenticator
}

// newEnv serves /read, /submit and /admin, each requiring that scope, on a
// loopback httptest server; the handler echoes the token's name.
func newEnv(t *testing.T, lim *FailureLimiter) *env {
	t.Helper()
	path := tokensPath(t)
	e := &env{secrets: map[Scope]string{}}
	for _, sc := range []Scope{ScopeRead, ScopeSubmit, ScopeAdmin} {
		secret, _, err := Create(path, string(sc)+"-tok", sc)
		if err != nil {
			t.Fatal(err)
		}
		e.secrets[sc] = secret
	}
	store, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	e.auth = &Authenticator{Store: store, Limiter: lim}
	mux := http.NewServeMux()
	for _, sc := range []Scope{ScopeRead, ScopeSubmit, ScopeAdmin} {
		mux.Handle("/"+string(sc), e.auth.Require(sc, func(w http.ResponseWriter, r *http.Request, tok Token) {
			io.WriteString(w, tok.Name)
		}))
	}
	e.srv = httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)
	return e
}

type reply struct {
	status int
	body   string
	hdr    http.Header
	err    struct {
		Error  string `json:"error"`
		Status int    `json:"status"`
	}
}

func (e *env) get(t *testing.T, path string, set func(*http.Request)) reply {
	t.Helper()
	req, _ := http.NewRequest("GET", e.srv.URL+path, nil)
	if set != nil {
		set(req)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, body: string(b), hdr: resp.Header}
	if resp.StatusCode != http.StatusOK {
		if err := json.Unmarshal(b, &r.err); err != nil {
			t.Fatalf("%s: error body is not JSON: %q", path, b)
		}
		if r.err.Status != resp.StatusCode || r.err.Error == "" {
			t.Fatalf("%s: error body %q does not match status %d", path, b, resp.StatusCode)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s: error Content-Type %q", path, ct)
		}
	}
	return r
}

func bearer(s string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+s) }
}

func cookie(name, s string) func(*http.Request) {
	return func(r *http.Request) { r.AddCookie(&http.Cookie{Name: name, Value: s}) }
}

func TestRequireScopes(t *testing.T) {
	e := newEnv(t, nil)
	order := []Scope{ScopeRead, ScopeSubmit, ScopeAdmin}
	for _, have := range order {
		for _, need := range order {
			r := e.get(t, "/"+string(need), bearer(e.secrets[have]))
			if have.Allows(need) {
				if r.status != 200 || r.body != string(have)+"-tok" {
					t.Errorf("%s token on /%s: %d %q", have, need, r.status, r.body)
				}
				continue
			}
			if r.status != http.StatusForbidden {
				t.Errorf("%s token on /%s: status %d, want 403", have, need, r.status)
				continue
			}
			if !strings.Contains(r.err.Error, "scope "+string(need)) || !strings.Contains(r.err.Error, "scope "+string(have)) {
				t.Errorf("403 message %q does not name the scope needed (%s) and held (%s)", r.err.Error, need, have)
			}
			if r.hdr.Get("WWW-Authenticate") != "" {
				t.Errorf("403 carries WWW-Authenticate")
			}
		}
	}
}

func TestRequireCredentials(t *testing.T) {
	e := newEnv(t, nil)
	good := e.secrets[ScopeRead]

	if r := e.get(t, "/read", func(r *http.Request) { r.Header.Set("Authorization", "bearer "+good) }); r.status != 200 {
		t.Errorf("lower-case scheme: %d", r.status)
	}
	if r := e.get(t, "/read", cookie(DefaultCookieName, good)); r.status != 200 || r.body != "read-tok" {
		t.Errorf("cookie: %d %q", r.status, r.body)
	}
	// The header wins over the cookie: a bad header is not rescued by a
	// good cookie.
	r := e.get(t, "/read", func(r *http.Request) { bearer("crt_wrong")(r); cookie(DefaultCookieName, good)(r) })
	if r.status != 401 {
		t.Errorf("bad bearer with good cookie: %d", r.status)
	}
	if r := e.get(t, "/read", cookie("other", good)); r.status != 401 {
		t.Errorf("cookie under another name: %d", r.status)
	}

	cases := map[string]func(*http.Request){
		"none":     nil,
		"wrong":    bearer("crt_wrong"),
		"empty":    func(r *http.Request) { r.Header.Set("Authorization", "Bearer ") },
		"basic":    func(r *http.Request) { r.SetBasicAuth("u", good) },
		"cookie":   cookie(DefaultCookieName, "crt_wrong"),
		"the hash": bearer(HashSecret(good)),
	}
	for name, set := range cases {
		r := e.get(t, "/read", set)
		if r.status != 401 {
			t.Errorf("%s: status %d, want 401", name, r.status)
			continue
		}
		if wa := r.hdr.Get("WWW-Authenticate"); !strings.HasPrefix(wa, `Bearer realm="cleanroom"`) {
			t.Errorf("%s: WWW-Authenticate %q", name, wa)
		}
		if strings.Contains(r.body, "crt_wrong") || strings.Contains(r.body, good) {
			t.Errorf("%s: the credential is echoed back: %s", name, r.body)
		}
	}
	if r := e.get(t, "/read", nil); !strings.Contains(r.err.Error, "Bearer") || !strings.Contains(r.err.Error, DefaultCookieName) {
		t.Errorf("missing-credential message does not say what to send: %q", r.err.Error)
	}

	// A custom cookie name.
	e.auth.CookieName = "tok"
	if r := e.get(t, "/read", cookie("tok", good)); r.status != 200 {
		t.Errorf("custom cookie: %d", r.status)
	}
}

func TestRequireRevokedAtRuntime(t *testing.T) {
	e := newEnv(t, nil)
	e.auth.Store.interval = 0
	good := e.secrets[ScopeAdmin]
	if r := e.get(t, "/admin", bearer(good)); r.status != 200 {
		t.Fatalf("before revoke: %d", r.status)
	}
	if err := Revoke(e.auth.Store.Path(), "admin-tok"); err != nil {
		t.Fatal(err)
	}
	if r := e.get(t, "/admin", bearer(good)); r.status != 401 {
		t.Fatalf("after revoke: %d", r.status)
	}
}

func TestRequireRateLimit(t *testing.T) {
	const every = 200 * time.Millisecond
	lim := NewFailureLimiter(3, every)
	e := newEnv(t, lim)
	good := e.secrets[ScopeRead]

	// Missing credentials and too-small scopes are not guesses.
	for range 5 {
		if r := e.get(t, "/read", nil); r.status != 401 {
			t.Fatalf("no credential: %d", r.status)
		}
		if r := e.get(t, "/admin", bearer(good)); r.status != 403 {
			t.Fatalf("small scope: %d", r.status)
		}
	}
	if lim.Len() != 0 {
		t.Fatalf("non-guesses were counted: %d limiter entries", lim.Len())
	}

	for i := range 3 {
		if r := e.get(t, "/read", bearer("crt_guess")); r.status != 401 {
			t.Fatalf("guess %d: %d, want 401", i, r.status)
		}
	}
	// Now limited: guesses get 429, but the right token still works,
	// so a client sharing the address is not locked out.
	r := e.get(t, "/read", bearer("crt_guess"))
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("guess after 3 failures: %d, want 429", r.status)
	}
	ra, err := strconv.Atoi(r.hdr.Get("Retry-After"))
	if err != nil || ra < 1 {
		t.Fatalf("Retry-After %q", r.hdr.Get("Retry-After"))
	}
	if r := e.get(t, "/read", bearer(good)); r.status != 200 {
		t.Fatalf("valid token from a limited address: %d, want 200", r.status)
	}
	// X-Forwarded-For is not believed.
	if r := e.get(t, "/read", func(r *http.Request) { bearer("crt_guess")(r); r.Header.Set("X-Forwarded-For", "198.51.100.9") }); r.status != 429 {
		t.Fatalf("X-Forwarded-For escaped the limit: %d", r.status)
	}

	// Recovery after the refill period.
	deadline := time.Now().Add(5 * time.Second)
	for {
		time.Sleep(every / 2)
		r := e.get(t, "/read", bearer("crt_guess"))
		if r.status == 401 {
			break
		}
		if r.status != 429 || time.Now().After(deadline) {
			t.Fatalf("no recovery: %d", r.status)
		}
	}
	// Successes cost nothing.
	for range 10 {
		if r := e.get(t, "/read", bearer(good)); r.status != 200 {
			t.Fatalf("success after recovery: %d", r.status)
		}
	}
}

func TestCheckDirect(t *testing.T) {
	e := newEnv(t, nil)
	req := httptest.NewRequest("GET", "/x", nil)
	req.RemoteAddr = "[2001:db8::1]:5555"
	req.Header.Set("Authorization", "Bearer "+e.secrets[ScopeSubmit])
	tok, status, err := e.auth.Check(req, ScopeSubmit)
	if err != nil || status != 200 || tok.Scope != ScopeSubmit {
		t.Fatalf("Check = %+v %d %v", tok, status, err)
	}
	if ip := ClientIP(req); ip != "2001:db8::1" {
		t.Fatalf("ClientIP = %q", ip)
	}
	// Nil store: fail closed.
	a := &Authenticator{}
	if _, status, err := a.Check(req, ScopeRead); status != 401 || err == nil {
		t.Fatalf("nil store: %d %v", status, err)
	}
}
