package sigstore_test

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// oidcIssuer is a local OpenID provider: discovery document + JWKS, and a
// signer that mints tokens Fulcio verifies for real. Pattern from fulcio's
// pkg/server/grpc_server_test.go (newOIDCIssuer).
type oidcIssuer struct {
	srv    *httptest.Server
	signer jose.Signer
	URL    string
}

func newOIDCIssuer() (*oidcIssuer, error) {
	pk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	jwk := jose.JSONWebKey{Algorithm: string(jose.RS256), Key: pk, KeyID: "test"}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jwk}, nil)
	if err != nil {
		return nil, err
	}
	o := &oidcIssuer{signer: signer}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"issuer": o.URL, "jwks_uri": o.URL + "/keys"})
	})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk.Public()}})
	})
	o.srv = httptest.NewServer(mux) // 127.0.0.1
	o.URL = o.srv.URL
	return o, nil
}

func (o *oidcIssuer) Close() { o.srv.Close() }

// gitlabJob describes the CI job a token is minted for.
type gitlabJob struct {
	Project string // group/project
	Ref     string // branch name
}

// SAN is what Fulcio (gitlab-pipeline) puts in the certificate: byte for
// byte what public-good Fulcio issues for GitLab.com.
func (j gitlabJob) SAN() string {
	return fmt.Sprintf("https://gitlab.com/%s//.gitlab-ci.yml@refs/heads/%s", j.Project, j.Ref)
}

// token mints a GitLab CI ID token (claims as in fulcio's
// pkg/identity/gitlabcom) valid from now-1m until exp.
func (o *oidcIssuer) token(j gitlabJob, exp time.Time) (string, error) {
	ns := j.Project[:len(j.Project)-len("/project")]
	claims := map[string]any{
		"project_path":       j.Project,
		"project_id":         "42",
		"pipeline_source":    "push",
		"pipeline_id":        "1001",
		"ci_config_ref_uri":  fmt.Sprintf("gitlab.com/%s//.gitlab-ci.yml@refs/heads/%s", j.Project, j.Ref),
		"ci_config_sha":      "714a629c0b401fdce83e847fc9589983fc6f46bc",
		"namespace_path":     ns,
		"namespace_id":       "7",
		"job_id":             "3659681386",
		"ref":                j.Ref,
		"ref_type":           "branch",
		"sha":                "714a629c0b401fdce83e847fc9589983fc6f46bc",
		"runner_id":          1,
		"runner_environment": "self-hosted",
		"project_visibility": "private",
	}
	now := time.Now()
	return jwt.Signed(o.signer).Claims(jwt.Claims{
		Issuer:    o.URL,
		Subject:   fmt.Sprintf("project_path:%s:ref_type:branch:ref:%s", j.Project, j.Ref),
		Audience:  jwt.Audience{"sigstore"},
		IssuedAt:  jwt.NewNumericDate(now.Add(-time.Minute)),
		NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
		Expiry:    jwt.NewNumericDate(exp),
	}).Claims(claims).Serialize()
}
