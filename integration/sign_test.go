package integration

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func keygen(t *testing.T, e *env, dir string) {
	t.Helper()
	cmd := e.command([]string{"COSIGN_PASSWORD=integration-pw"}, "keygen")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
}

func TestKeySignedRunVerifies(t *testing.T) {
	e := newEnv(t)
	keys, other := t.TempDir(), t.TempDir()
	keygen(t, e, keys)
	keygen(t, e, other)
	e.pipeline(`version: 1
image: IMAGE
steps:
  - name: build
    run: mkdir -p out && echo signed-app > out/app
artifacts: [out/app]
`)
	pw := []string{"COSIGN_PASSWORD=integration-pw"}
	r := e.run(pw, "run", "--sign-key", filepath.Join(keys, "cosign.key"))
	if r.code != 0 {
		t.Fatalf("%s", r)
	}
	bundle := filepath.Join(e.dir, ".cleanroom", "provenance.sigstore.json")
	for _, f := range []string{bundle, filepath.Join(e.dir, ".cleanroom", "out", "app.sigstore.json")} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("bundle missing: %v", err)
		}
	}
	art := filepath.Join(e.dir, "out", "app")
	if v := e.run(nil, "verify", art, "--provenance-bundle", bundle, "--key", filepath.Join(keys, "cosign.pub")); v.code != 0 || !strings.Contains(v.stdout, "signature:     verified") {
		t.Fatalf("verify: %s", v)
	}
	if v := e.run(nil, "verify", art, "--provenance-bundle", bundle, "--key", filepath.Join(other, "cosign.pub")); v.code == 0 {
		t.Fatalf("verify accepted another key: %s", v)
	}

	// A statement edited after signing is rejected.
	raw, _ := os.ReadFile(bundle)
	var b map[string]any
	json.Unmarshal(raw, &b)
	env := b["dsseEnvelope"].(map[string]any)
	payload, _ := base64.StdEncoding.DecodeString(env["payload"].(string))
	env["payload"] = base64.StdEncoding.EncodeToString([]byte(strings.Replace(string(payload), "local@v1", "trusted@v1", 1)))
	tampered, _ := json.Marshal(b)
	tb := filepath.Join(t.TempDir(), "tampered.sigstore.json")
	os.WriteFile(tb, tampered, 0o644)
	if v := e.run(nil, "verify", art, "--provenance-bundle", tb, "--key", filepath.Join(keys, "cosign.pub")); v.code == 0 || !strings.Contains(v.stderr, "signature") {
		t.Fatalf("verify accepted a tampered statement: %s", v)
	}

	// The key's password and material never reach an output.
	filepath.Walk(filepath.Join(e.dir, ".cleanroom"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			if c, _ := os.ReadFile(p); strings.Contains(string(c), "integration-pw") || strings.Contains(string(c), "PRIVATE KEY") {
				t.Errorf("secret material in %s", p)
			}
		}
		return nil
	})

	// A failed run signs nothing and leaves no earlier bundle behind.
	e.pipeline(`version: 1
image: IMAGE
steps:
  - name: build
    run: exit 1
artifacts: [out/app]
`)
	if r := e.run(pw, "run", "--sign-key", filepath.Join(keys, "cosign.key")); r.code != 1 {
		t.Fatalf("%s", r)
	}
	if _, err := os.Stat(bundle); err == nil {
		t.Fatal("a failed run left a provenance bundle")
	}
}

// An expired OIDC token is refused before any step runs.
func TestKeylessExpiredTokenFailsBeforeTheBuild(t *testing.T) {
	e := newEnv(t)
	e.pipeline(`version: 1
image: IMAGE
steps:
  - name: build
    run: touch ran
`)
	enc := func(v any) string { j, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(j) }
	tok := enc(map[string]string{"alg": "RS256"}) + "." + enc(map[string]any{
		"iss": "https://issuer.example.test", "sub": "x", "aud": "sigstore", "exp": time.Now().Add(-time.Hour).Unix(),
	}) + ".c2ln"
	r := e.run([]string{"SIGSTORE_ID_TOKEN=" + tok}, "run", "--keyless")
	if r.code != 2 || !strings.Contains(strings.ToLower(r.stderr), "expired") {
		t.Fatalf("%s", r)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "ran")); err == nil {
		t.Fatal("the build ran with an expired token")
	}
}
