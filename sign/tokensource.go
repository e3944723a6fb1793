package sign

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// TokenSource yields an OIDC identity token for Fulcio. It is called when
// the keyless signer needs a certificate (once per ~10 min of signing), not
// at construction, so a source may fetch a fresh token each time.
type TokenSource func(ctx context.Context) (string, error)

// EnvToken is the variable cosign and GitLab's `id_tokens:` use.
const EnvToken = "SIGSTORE_ID_TOKEN"

// TokenFromEnv reads SIGSTORE_ID_TOKEN (GitLab CI: `id_tokens:
// SIGSTORE_ID_TOKEN: aud: sigstore`).
func TokenFromEnv() TokenSource {
	return func(context.Context) (string, error) {
		tok := strings.TrimSpace(os.Getenv(EnvToken))
		if tok == "" {
			return "", fmt.Errorf("%w: %s is not set", ErrNoToken, EnvToken)
		}
		return tok, nil
	}
}

// TokenFromFile reads the token from a file each time (projected service
// account tokens and similar are rotated in place).
func TokenFromFile(path string) TokenSource {
	return func(context.Context) (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrNoToken, err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("%w: %s is empty", ErrNoToken, path)
		}
		return tok, nil
	}
}

// GitHub Actions exposes these to jobs with `permissions: id-token: write`.
const (
	EnvGitHubTokenURL   = "ACTIONS_ID_TOKEN_REQUEST_URL"
	EnvGitHubTokenToken = "ACTIONS_ID_TOKEN_REQUEST_TOKEN"
)

// TokenFromGitHubActions requests a token with audience "sigstore" from the
// Actions token service, as cosign's github provider does.
func TokenFromGitHubActions() TokenSource {
	hc := &http.Client{Timeout: 30 * time.Second}
	return func(ctx context.Context) (string, error) {
		reqURL, bearer := os.Getenv(EnvGitHubTokenURL), os.Getenv(EnvGitHubTokenToken)
		if reqURL == "" || bearer == "" {
			return "", fmt.Errorf("%w: %s/%s not set (does the workflow have `permissions: id-token: write`?)",
				ErrNoToken, EnvGitHubTokenURL, EnvGitHubTokenToken)
		}
		u, err := url.Parse(reqURL)
		if err != nil {
			return "", fmt.Errorf("%w: %s is not a URL", ErrNoToken, EnvGitHubTokenURL)
		}
		q := u.Query()
		q.Set("audience", "sigstore")
		u.RawQuery = q.Encode()

		var lastErr error
		for attempt := 0; attempt < 3; attempt++ {
			if attempt > 0 {
				select {
				case <-ctx.Done():
					return "", ctx.Err()
				case <-time.After(time.Duration(attempt) * time.Second):
				}
			}
			tok, retry, err := fetchGitHubToken(ctx, hc, u.String(), bearer)
			if err == nil {
				return tok, nil
			}
			lastErr = err
			if !retry {
				break
			}
		}
		return "", lastErr
	}
}

func fetchGitHubToken(ctx context.Context, hc *http.Client, u, bearer string) (tok string, retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", false, err
	}
	req.Header.Set("Authorization", "bearer "+bearer)
	resp, err := hc.Do(req)
	if err != nil {
		// Name only the host and the transport cause: *url.Error would
		// print the full URL, whose query may carry request secrets.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", true, fmt.Errorf("%w: requesting GitHub Actions token from %s: %v", ErrNoToken, req.URL.Host, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return "", resp.StatusCode >= 500 || resp.StatusCode == 429,
			fmt.Errorf("%w: GitHub Actions token service answered %s", ErrNoToken, resp.Status)
	}
	var v struct {
		Value string `json:"value"`
	}
	if err := json.Unmarshal(body, &v); err != nil || v.Value == "" {
		return "", false, fmt.Errorf("%w: GitHub Actions token service sent no token", ErrNoToken)
	}
	return v.Value, false, nil
}
