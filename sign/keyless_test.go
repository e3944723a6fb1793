package sign

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testSAN    = "https://gitlab.com/group/project//.gitlab-ci.yml@refs/heads/main"
	testIssuer = "https://gitlab.com"
)

// gitlabToken is an unsigned-but-well-formed GitLab-shaped ID token (the
// fake Fulcio does not verify signatures; the real one is tested in
// integration/sigstore).
func gitlabToken(t *testing.T, exp time.Time) string {
	t.Helper()
	c := map[string]any{
		"iss": testIssuer, "aud": "sigstore", "exp": exp.Unix(), "iat": time.Now().Unix(),
		"sub":               "project_path:group/project:ref_type:branch:ref:main",
		"ci_config_ref_uri": strings.TrimPrefix(testSAN, "https://"),
	}
	b, _ := json.Marshal(c)
	h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256"}`))
	return h + "." + base64.RawURLEncoding.EncodeToString(b) + ".c2ln"
}

func staticToken(tok string) TokenSource {
	return func(context.Context) (string, error) { return tok, nil }
}

func newFakeKeyless(t *testing.T, f *fakeSigstore, tok string) Signer {
	t.Helper()
	s, err := NewKeylessSigner(context.Background(), KeylessOptions{
		FulcioURL: f.fulcio.URL, TSAURL: f.tsa.URL, SkipTlog: true,
		TrustedRoot: f.trustedRoot(t), Token: staticToken(tok),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestKeylessSignVerify(t *testing.T) {
	ctx := context.Background()
	f := newFakeSigstore(t)
	s := newFakeKeyless(t, f, gitlabToken(t, time.Now().Add(time.Hour)))
	if !strings.HasPrefix(s.Identity(), "keyless:") {
		t.Fatalf("identity before signing: %q", s.Identity())
	}
	artifact := []byte("hello.tar contents")
	blob, err := s.SignBlob(ctx, artifact)
	if err != nil {
		t.Fatal(err)
	}
	stmt := statement(artifact)
	att, err := s.SignDSSE(ctx, InTotoPayloadType, stmt)
	if err != nil {
		t.Fatal(err)
	}
	if s.Identity() != testSAN {
		t.Fatalf("identity after signing: %q", s.Identity())
	}
	if n := f.fulcioCalls.Load(); n != 1 {
		t.Fatalf("%d Fulcio requests for 2 signatures, want 1 (certificate reuse)", n)
	}

	tr := f.trustedRoot(t)
	good := VerifyOptions{TrustedRoot: tr, CertIdentity: testSAN, CertOIDCIssuer: testIssuer}
	res, err := VerifyBlob(blob, bytes.NewReader(artifact), good)
	if err != nil {
		t.Fatal(err)
	}
	if res.Identity != testSAN || res.Issuer != testIssuer || len(res.Timestamps) == 0 || res.TlogVerified {
		t.Fatalf("result %+v", res)
	}
	got, _, err := VerifyAttestation(att, good)
	if err != nil || !bytes.Equal(got, stmt) {
		t.Fatalf("attestation: %v", err)
	}
	regex := VerifyOptions{TrustedRoot: tr, CertIdentityRegexp: `^https://gitlab\.com/group/`, CertOIDCIssuerRegexp: `gitlab`}
	if _, err := VerifyBlob(blob, bytes.NewReader(artifact), regex); err != nil {
		t.Fatalf("regexp identity: %v", err)
	}

	check := func(name string, err, want error, mention ...string) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Fatalf("%s: got %v, want %v", name, err, want)
		}
		for _, m := range mention {
			if !strings.Contains(err.Error(), m) {
				t.Fatalf("%s: %q does not mention %q", name, err, m)
			}
		}
	}
	wrongSAN := good
	wrongSAN.CertIdentity = "https://gitlab.com/group/other//.gitlab-ci.yml@refs/heads/main"
	_, err = VerifyBlob(blob, bytes.NewReader(artifact), wrongSAN)
	check("wrong SAN", err, ErrIdentityMismatch, `expected SAN "`+wrongSAN.CertIdentity+`"`, `certificate has "`+testSAN+`"`)
	_, _, err = VerifyAttestation(att, wrongSAN)
	check("wrong SAN (attestation)", err, ErrIdentityMismatch)

	wrongRe := regex
	wrongRe.CertIdentityRegexp = `^https://github\.com/`
	_, err = VerifyBlob(blob, bytes.NewReader(artifact), wrongRe)
	check("wrong SAN regexp", err, ErrIdentityMismatch, "matching")

	wrongIss := good
	wrongIss.CertOIDCIssuer = "https://token.actions.githubusercontent.com"
	_, err = VerifyBlob(blob, bytes.NewReader(artifact), wrongIss)
	check("wrong issuer", err, ErrIssuerMismatch, `expected issuer "https://token.actions.githubusercontent.com"`, `certificate has "https://gitlab.com"`)

	_, err = VerifyBlob(blob, strings.NewReader("hello.tar contents, modified"), good)
	check("tampered artifact", err, ErrSignatureMismatch, "artifact")
	_, _, err = VerifyAttestation(tamperPayload(t, att, func(p []byte) []byte {
		return bytes.Replace(p, []byte(`"hello.tar"`), []byte(`"other.tar"`), 1)
	}), good)
	check("tampered statement", err, ErrSignatureMismatch, "statement")

	other := newFakeSigstore(t)
	untrusted := good
	untrusted.TrustedRoot = other.trustedRoot(t)
	_, err = VerifyBlob(blob, bytes.NewReader(artifact), untrusted)
	check("untrusted root", err, ErrTimestamp, "trusted timestamp authority")

	_, err = VerifyBlob(stripTimestamps(t, blob), bytes.NewReader(artifact), good)
	check("no timestamp", err, ErrTimestamp, "no RFC 3161 timestamp")

	needLog := good
	needLog.RequireTlog = true
	_, err = VerifyBlob(blob, bytes.NewReader(artifact), needLog)
	check("no tlog entry", err, ErrTlog)

	if _, err := VerifyBlob(blob, bytes.NewReader(artifact), VerifyOptions{TrustedRoot: tr, CertOIDCIssuer: testIssuer}); err == nil {
		t.Fatal("keyless verification without SAN criterion accepted")
	}
	if _, err := VerifyBlob(blob, bytes.NewReader(artifact), VerifyOptions{PublicKey: newKey(t, "p256").Public()}); !errors.Is(err, ErrUntrustedRoot) {
		t.Fatalf("keyless bundle with a public key: %v", err)
	}
}

// TestKeylessUntrustedFulcio: same TSA, different Fulcio CA — the chain
// check, not the timestamp, must fail.
func TestKeylessUntrustedFulcio(t *testing.T) {
	f := newFakeSigstore(t)
	s := newFakeKeyless(t, f, gitlabToken(t, time.Now().Add(time.Hour)))
	blob, err := s.SignBlob(context.Background(), []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	rogue := newFakeSigstore(t)
	rogue.tsaRoot, rogue.tsaLeaf = f.tsaRoot, f.tsaLeaf
	_, err = VerifyBlob(blob, strings.NewReader("x"), VerifyOptions{TrustedRoot: rogue.trustedRoot(t), CertIdentity: testSAN, CertOIDCIssuer: testIssuer})
	if !errors.Is(err, ErrUntrustedRoot) || !strings.Contains(err.Error(), "trusted Fulcio root") {
		t.Fatalf("got %v, want ErrUntrustedRoot", err)
	}
}

func stripTimestamps(t *testing.T, bundleJSON []byte) []byte {
	t.Helper()
	var m map[string]any
	json.Unmarshal(bundleJSON, &m)
	vm := m["verificationMaterial"].(map[string]any)
	if _, ok := vm["timestampVerificationData"]; !ok {
		t.Fatal("bundle has no timestamp to strip")
	}
	delete(vm, "timestampVerificationData")
	out, _ := json.Marshal(m)
	return out
}

func TestKeylessExpiredTokenFailsBeforeFulcio(t *testing.T) {
	f := newFakeSigstore(t)
	s := newFakeKeyless(t, f, gitlabToken(t, time.Now().Add(-time.Minute)))
	_, err := s.SignBlob(context.Background(), []byte("x"))
	if !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("got %v, want ErrTokenExpired", err)
	}
	if f.fulcioCalls.Load() != 0 {
		t.Fatal("expired token was sent to Fulcio")
	}
}

func TestKeylessRedactsToken(t *testing.T) {
	f := newFakeSigstore(t)
	f.echoAuthOn401 = true
	tok := gitlabToken(t, time.Now().Add(time.Hour))
	_, err := newFakeKeyless(t, f, tok).SignBlob(context.Background(), []byte("x"))
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("got %v, want Fulcio 401", err)
	}
	if strings.Contains(err.Error(), tok) || !strings.Contains(err.Error(), "REDACTED") {
		t.Fatalf("token not redacted: %v", err)
	}
}

func TestKeylessTokenSourceError(t *testing.T) {
	f := newFakeSigstore(t)
	s, _ := NewKeylessSigner(context.Background(), KeylessOptions{
		FulcioURL: f.fulcio.URL, TSAURL: f.tsa.URL, SkipTlog: true,
		Token: func(context.Context) (string, error) { return "", ErrNoToken },
	})
	if _, err := s.SignBlob(context.Background(), []byte("x")); !errors.Is(err, ErrNoToken) {
		t.Fatalf("got %v", err)
	}
	if _, err := NewKeylessSigner(context.Background(), KeylessOptions{}); err == nil {
		t.Fatal("no token source accepted")
	}
	if _, err := NewKeylessSigner(context.Background(), KeylessOptions{Token: staticToken("x"), RekorVersion: 3}); err == nil {
		t.Fatal("Rekor v3 accepted")
	}
}

// TestKeylessConcurrent runs under -race: one certificate, many signers.
func TestKeylessConcurrent(t *testing.T) {
	f := newFakeSigstore(t)
	s := newFakeKeyless(t, f, gitlabToken(t, time.Now().Add(time.Hour)))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := s.SignDSSE(context.Background(), InTotoPayloadType, statement([]byte{byte(i)}))
			errs <- err
			_ = s.Identity()
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := f.fulcioCalls.Load(); n != 1 {
		t.Fatalf("%d Fulcio requests, want 1", n)
	}
}
