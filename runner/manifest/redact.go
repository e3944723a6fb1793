package manifest

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"strings"
)

// The statement is published next to the artifacts, so nothing recorded in
// it may carry a credential. Remotes and fetched URLs are the two places one
// can hide: CI systems put tokens in clone URLs (https://token@host/…) and
// object stores hand out pre-signed URLs whose query is the credential. The
// content digest, not the URL text, is what identifies a fetch, so removing
// these parts loses nothing a verifier needs.

// redactedValue replaces the value of a credential-bearing query parameter.
const redactedValue = "REDACTED"

// sensitiveParam reports whether a query parameter name is one under which
// credentials are commonly passed: tokens, pre-signed URL signatures
// (X-Amz-Signature, X-Goog-Signature, Azure's sig), API keys.
func sensitiveParam(name string) bool {
	n := strings.ToLower(name)
	switch n {
	case "sig", "key", "code", "auth":
		return true
	}
	for _, s := range []string{"token", "secret", "passw", "signature", "credential", "apikey", "api_key", "api-key", "accesskey", "access_key", "session"} {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}

// redactQuery blanks the values of sensitive parameters in a raw query while
// keeping every other byte, and the order, as it was.
func redactQuery(raw string) string {
	if raw == "" {
		return raw
	}
	parts := strings.Split(raw, "&")
	for i, kv := range parts {
		k, _, hasValue := strings.Cut(kv, "=")
		name, err := url.QueryUnescape(k)
		if err != nil {
			name = k
		}
		if hasValue && sensitiveParam(name) {
			parts[i] = k + "=" + redactedValue
		}
	}
	return strings.Join(parts, "&")
}

// redactURL removes credentials from an absolute URL: the whole userinfo
// (a bare username can itself be a token) except an ssh login name, and the
// values of sensitive query parameters.
func redactURL(u *url.URL) *url.URL {
	r := *u
	if r.User != nil {
		if strings.HasSuffix(r.Scheme, "ssh") {
			r.User = url.User(r.User.Username())
		} else {
			r.User = nil
		}
	}
	r.RawQuery = redactQuery(r.RawQuery)
	return &r
}

// gitRemoteURI turns a git remote into the redacted URL recorded as
// source.remote. Accepted forms: scheme://… URLs (optionally already
// "git+"-prefixed), scp-like "user@host:path", and absolute paths.
func gitRemoteURI(remote string) (string, error) {
	if hasControl(remote) || strings.ContainsAny(remote, " \t") {
		return "", fmt.Errorf("remote %q contains whitespace or control characters", remote)
	}
	remote = strings.TrimPrefix(remote, "git+")
	switch {
	case strings.HasPrefix(remote, "/"):
		return "file://" + path.Clean(remote), nil
	case !strings.Contains(remote, "://"):
		// scp-like syntax: [user@]host:path, no scheme.
		hostPart, p, ok := strings.Cut(remote, ":")
		if !ok || hostPart == "" || p == "" || strings.Contains(hostPart, "/") {
			return "", fmt.Errorf("remote %q is neither a URL, an scp-like address nor an absolute path", remote)
		}
		remote = "ssh://" + hostPart + "/" + strings.TrimPrefix(p, "/")
	}
	u, err := url.Parse(remote)
	if err != nil {
		return "", fmt.Errorf("remote: %w", err)
	}
	if u.Scheme == "" || (u.Host == "" && u.Scheme != "file") {
		return "", fmt.Errorf("remote %q has no scheme or host", remote)
	}
	return redactURL(u).String(), nil
}

// dependencyURI returns the URI recorded for a fetch and whether the fetch
// was an opaque tunnel ("host:port").
func dependencyURI(raw string) (uri string, tunnel bool, err error) {
	if raw == "" {
		return "", false, errors.New("empty")
	}
	if hasControl(raw) || strings.ContainsAny(raw, " \t") {
		return "", false, fmt.Errorf("%q contains whitespace or control characters", raw)
	}
	if !strings.Contains(raw, "://") {
		if !validHostPort(raw) {
			return "", false, fmt.Errorf("%q is neither an absolute URL nor host:port", raw)
		}
		return raw, true, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", false, err
	}
	if u.Scheme == "" || u.Host == "" {
		return "", false, fmt.Errorf("%q is not an absolute URL", raw)
	}
	return redactURL(u).String(), false, nil
}

// RedactURL returns raw with credentials removed (userinfo, and the values
// of credential-like query parameters), or raw unchanged when it is not an
// absolute URL. The runner applies it to the egress log too, which is
// published next to the artifacts.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return raw
	}
	if u.User == nil && redactQuery(u.RawQuery) == u.RawQuery {
		return raw
	}
	return redactURL(u).String()
}
