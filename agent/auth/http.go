package auth

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
)

// DefaultCookieName carries the token for the web page, which cannot set
// an Authorization header on plain links and downloads.
const DefaultCookieName = "cleanroom_token"

// Authenticator checks requests against a Store.
type Authenticator struct {
	Store *Store
	// Limiter, if set, limits failed attempts per client address.
	Limiter *FailureLimiter
	// CookieName is read when there is no Authorization header; empty
	// means DefaultCookieName.
	CookieName string
	// Logger, if set, gets failures (address and reason, never the
	// credential) at debug and an address becoming limited at warn.
	Logger hclog.Logger
	// OnFailure, if set, is called for each invalid token presented;
	// limited tells a 429 from a 401 (metrics).
	OnFailure func(limited bool)
}

// APIRoute is the limiter route of the API's tokens (the API, the web
// page and /metrics share one token store).
const APIRoute = "api"

// Check authenticates r for an action needing scope need. It returns the
// token and http.StatusOK, or the status to answer with (401, 403, 429)
// and an error whose message is fit for the client.
//
// Only a presented credential that matches no token counts as a failure:
// no credential at all, or a valid token with too small a scope, reveals
// nothing about any secret. A valid token is accepted even from an
// address the limiter holds back (see FailureLimiter): failures are
// someone's on that address, not necessarily this client's. A failure from
// a limited address gets 429 instead of 401.
func (a *Authenticator) Check(r *http.Request, need Scope) (Token, int, error) {
	ip := ClientIP(r)
	secret, err := a.credential(r)
	if err != nil {
		a.debug("authentication failed", "remote", ip, "reason", err)
		return Token{}, http.StatusUnauthorized, err
	}
	tok, ok := a.Store.Authenticate(secret)
	if !ok {
		a.debug("authentication failed", "remote", ip, "reason", "unknown token")
		if a.Limiter != nil {
			if wait := a.Limiter.RetryAfter(APIRoute, ip); wait > 0 {
				a.failed(true)
				return Token{}, http.StatusTooManyRequests, fmt.Errorf("too many failed authentication attempts from this address; retry in %s", retrySeconds(wait)+"s")
			}
			a.Limiter.Fail(APIRoute, ip)
			if a.Logger != nil && !a.Limiter.Allowed(APIRoute, ip) {
				a.Logger.Warn("address limited after repeated authentication failures", "remote", ip)
			}
		}
		a.failed(false)
		return Token{}, http.StatusUnauthorized, errInvalidToken
	}
	if !tok.Scope.Allows(need) {
		return tok, http.StatusForbidden, fmt.Errorf("token %q has scope %s; this needs scope %s", tok.Name, tok.Scope, need)
	}
	return tok, http.StatusOK, nil
}

// credentialError is a 401 for a request that presented no usable
// credential, as opposed to a wrong one.
type credentialError string

func (e credentialError) Error() string { return string(e) }

var errInvalidToken = credentialError("invalid or revoked token")

func (a *Authenticator) credential(r *http.Request) (string, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, secret, _ := strings.Cut(h, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			return "", credentialError(`unsupported Authorization scheme; send "Authorization: Bearer <token>"`)
		}
		if secret = strings.TrimSpace(secret); secret == "" {
			return "", credentialError(`empty bearer token; send "Authorization: Bearer <token>"`)
		}
		return secret, nil
	}
	if c, err := r.Cookie(a.cookieName()); err == nil && c.Value != "" {
		return c.Value, nil
	}
	return "", credentialError(fmt.Sprintf(`authentication required: send "Authorization: Bearer <token>" or the %s cookie`, a.cookieName()))
}

func (a *Authenticator) cookieName() string {
	if a.CookieName != "" {
		return a.CookieName
	}
	return DefaultCookieName
}

func (a *Authenticator) failed(limited bool) {
	if a.OnFailure != nil {
		a.OnFailure(limited)
	}
}

func (a *Authenticator) debug(msg string, args ...any) {
	if a.Logger != nil {
		a.Logger.Debug(msg, args...)
	}
}

// Require wraps next so that it runs only for requests whose token has at
// least scope need; others get a JSON error {"error": ..., "status": N}.
func (a *Authenticator) Require(need Scope, next func(http.ResponseWriter, *http.Request, Token)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, status, err := a.Check(r, need)
		if err == nil {
			next(w, r, tok)
			return
		}
		switch status {
		case http.StatusUnauthorized:
			v := `Bearer realm="cleanroom"`
			if err == errInvalidToken {
				v += `, error="invalid_token"`
			}
			w.Header().Set("WWW-Authenticate", v)
		case http.StatusTooManyRequests:
			if a.Limiter != nil {
				w.Header().Set("Retry-After", retrySeconds(a.Limiter.RetryAfter(APIRoute, ClientIP(r))))
			}
		}
		WriteError(w, status, err.Error())
	})
}

// WriteError writes the agent's JSON error body. Error answers are never
// cached: they depend on the credential.
func WriteError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(struct {
		Error  string `json:"error"`
		Status int    `json:"status"`
	}{msg, status})
}

// ClientIP is the host of r.RemoteAddr. Forwarding headers are ignored on
// purpose: any client can set them, and the limiter would be bypassed by
// sending a new X-Forwarded-For with each guess.
func ClientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// retrySeconds rounds up to whole seconds, at least 1, as Retry-After
// wants.
func retrySeconds(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return strconv.FormatInt(s, 10)
}
