package sign

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTokenFromEnv(t *testing.T) {
	t.Setenv(EnvToken, "")
	if _, err := TokenFromEnv()(context.Background()); !errors.Is(err, ErrNoToken) {
		t.Fatalf("unset: %v", err)
	}
	t.Setenv(EnvToken, " tok \n")
	if tok, err := TokenFromEnv()(context.Background()); err != nil || tok != "tok" {
		t.Fatalf("got %q %v", tok, err)
	}
}

func TestTokenFromFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "token")
	if _, err := TokenFromFile(p)(context.Background()); !errors.Is(err, ErrNoToken) {
		t.Fatalf("missing: %v", err)
	}
	os.WriteFile(p, []byte("\n"), 0o600)
	if _, err := TokenFromFile(p)(context.Background()); !errors.Is(err, ErrNoToken) {
		t.Fatalf("empty: %v", err)
	}
	os.WriteFile(p, []byte("abc\n"), 0o600)
	if tok, err := TokenFromFile(p)(context.Background()); err != nil || tok != "abc" {
		t.Fatalf("got %q %v", tok, err)
	}
}

func TestTokenFromGitHubActions(t *testing.T) {
	var fails int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "bearer request-secret" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		if r.URL.Query().Get("audience") != "sigstore" || r.URL.Query().Get("api-version") != "2.0" {
			http.Error(w, "bad query "+r.URL.RawQuery, http.StatusBadRequest)
			return
		}
		if fails > 0 { // transient failure: retried
			fails--
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte(`{"count":1,"value":"the.jwt.token"}`))
	}))
	defer srv.Close()

	t.Setenv(EnvGitHubTokenURL, "")
	t.Setenv(EnvGitHubTokenToken, "")
	if _, err := TokenFromGitHubActions()(context.Background()); !errors.Is(err, ErrNoToken) || !strings.Contains(err.Error(), "id-token: write") {
		t.Fatalf("unset: %v", err)
	}

	t.Setenv(EnvGitHubTokenURL, srv.URL+"/token?api-version=2.0")
	t.Setenv(EnvGitHubTokenToken, "request-secret")
	fails = 1
	tok, err := TokenFromGitHubActions()(context.Background())
	if err != nil || tok != "the.jwt.token" {
		t.Fatalf("got %q %v", tok, err)
	}

	t.Setenv(EnvGitHubTokenToken, "wrong")
	_, err = TokenFromGitHubActions()(context.Background())
	if !errors.Is(err, ErrNoToken) || !strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("unauthorized: %v", err)
	}

	// Unreachable service: the error names the host, not the URL's query.
	t.Setenv(EnvGitHubTokenURL, "http://127.0.0.1:1/token?sig=query-secret")
	_, err = TokenFromGitHubActions()(context.Background())
	if !errors.Is(err, ErrNoToken) || strings.Contains(err.Error(), "query-secret") {
		t.Fatalf("unreachable: %v", err)
	}
}
