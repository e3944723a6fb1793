package webhook

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http/httptest"
	"testing"
)

// FuzzParse sends arbitrary, correctly signed bodies to both providers'
// parsers: a delivery is either refused with an error or yields a push of
// the hook's own repository with a full commit id, and never panics.
func FuzzParse(f *testing.F) {
	f.Add([]byte(`{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567","repository":{"clone_url":"https://git.example.org/a/b.git"}}`), "push")
	f.Add([]byte(`{"object_kind":"push","ref":"refs/heads/main","checkout_sha":"0123456789abcdef0123456789abcdef01234567","project":{"git_http_url":"https://git.example.org/a/b.git"}}`), "Push Hook")
	f.Add([]byte(`{"ref":"refs/tags/v1","after":"0000000000000000000000000000000000000000","deleted":true}`), "push")
	f.Add([]byte(`[]`), "ping")
	secret := []byte("fuzz-secret-fuzz-secret")
	f.Fuzz(func(t *testing.T, body []byte, event string) {
		for _, p := range []Provider{GitHub, GitLab} {
			hook := Hook{Name: "h", Provider: p, Secret: secret, Repository: "https://git.example.org/a/b.git"}
			r := httptest.NewRequest("POST", "/hooks/h", bytes.NewReader(body))
			if p == GitHub {
				m := hmac.New(sha256.New, secret)
				m.Write(body)
				r.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(m.Sum(nil)))
				r.Header.Set("X-GitHub-Event", event)
			} else {
				r.Header.Set("X-Gitlab-Token", string(secret))
				r.Header.Set("X-Gitlab-Event", event)
			}
			push, err := Parse(r, hook, 1<<20)
			if err != nil {
				continue
			}
			if push.Repository != hook.Repository || len(push.Commit) != 40 || push.Ref == "" {
				t.Fatalf("%s accepted %q as %+v", p, body, push)
			}
		}
	})
}
