package sigstore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/sign"
)

var job = gitlabJob{Project: "group/project", Ref: "main"}

func keylessSigner(t *testing.T, s *stack, withRekor bool, tok string) sign.Signer {
	t.Helper()
	o := sign.KeylessOptions{
		FulcioURL: s.fulcio.URL, TSAURL: s.tsa.URL, SkipTlog: !withRekor,
		Token: func(context.Context) (string, error) { return tok, nil },
	}
	if withRekor {
		o.RekorURL = s.needRekor(t).URL
	}
	o.TrustedRoot, _ = s.trustedRoot(t, withRekor) // self-verify every bundle
	signer, err := sign.NewKeylessSigner(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return signer
}

func mustToken(t *testing.T, s *stack, j gitlabJob, exp time.Time) string {
	t.Helper()
	tok, err := s.oidc.token(j, exp)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestKeylessEndToEnd: GitLab-shaped token → real Fulcio → real TSA → real
// Rekor v2 → bundle → verification with identity, issuer, timestamp and
// log inclusion required; then every way it must fail.
func TestKeylessEndToEnd(t *testing.T) {
	s := getStack(t)
	ctx := context.Background()
	tok := mustToken(t, s, job, time.Now().Add(30*time.Minute))
	signer := keylessSigner(t, s, true, tok)

	artifact := []byte("hello.tar: the build output\n")
	stmt := slsaStatement(t, "hello.tar", artifact)
	blob, err := signer.SignBlob(ctx, artifact)
	if err != nil {
		t.Fatal(err)
	}
	att, err := signer.SignDSSE(ctx, sign.InTotoPayloadType, stmt)
	if err != nil {
		t.Fatal(err)
	}
	if signer.Identity() != job.SAN() {
		t.Fatalf("signer identity %q, want %q", signer.Identity(), job.SAN())
	}

	tr, _ := s.trustedRoot(t, true)
	good := sign.VerifyOptions{
		TrustedRoot: tr, CertIdentity: job.SAN(), CertOIDCIssuer: s.oidc.URL,
		RequireTlog: true, RequireTimestamp: true,
	}
	res, err := sign.VerifyBlob(blob, bytes.NewReader(artifact), good)
	if err != nil {
		t.Fatal(err)
	}
	if res.Identity != job.SAN() || res.Issuer != s.oidc.URL || !res.TlogVerified || len(res.Timestamps) != 1 {
		t.Fatalf("result %+v", res)
	}
	if got := res.Certificate.SourceRepositoryURI; got != "https://gitlab.com/group/project" {
		t.Fatalf("SourceRepositoryURI %q", got)
	}
	gotStmt, _, err := sign.VerifyAttestation(att, good)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gotStmt, stmt) {
		t.Fatal("verified statement differs from the signed one")
	}
	if !strings.Contains(string(blob), `"tlogEntries"`) || !strings.Contains(string(att), `"rfc3161Timestamps"`) {
		t.Fatal("bundle lacks the log entry or timestamp")
	}

	expectErr := func(name string, err, want error, mention ...string) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Fatalf("%s: got %v, want %v", name, err, want)
		}
		for _, m := range mention {
			if !strings.Contains(err.Error(), m) {
				t.Fatalf("%s: %q does not mention %q", name, err, m)
			}
		}
		t.Logf("%s: %v", name, err)
	}
	wrongSAN := good
	wrongSAN.CertIdentity = gitlabJob{Project: "group/project", Ref: "evil"}.SAN()
	_, err = sign.VerifyBlob(blob, bytes.NewReader(artifact), wrongSAN)
	expectErr("wrong SAN", err, sign.ErrIdentityMismatch, `expected SAN "`+wrongSAN.CertIdentity+`"`, `certificate has "`+job.SAN()+`"`)
	_, _, err = sign.VerifyAttestation(att, wrongSAN)
	expectErr("wrong SAN (attestation)", err, sign.ErrIdentityMismatch)

	wrongIssuer := good
	wrongIssuer.CertOIDCIssuer = "https://gitlab.com"
	_, err = sign.VerifyBlob(blob, bytes.NewReader(artifact), wrongIssuer)
	expectErr("wrong issuer", err, sign.ErrIssuerMismatch, `expected issuer "https://gitlab.com"`, `certificate has "`+s.oidc.URL+`"`)

	_, err = sign.VerifyBlob(blob, strings.NewReader("hello.tar: a trojan\n"), good)
	expectErr("tampered artifact", err, sign.ErrSignatureMismatch, "artifact")

	_, _, err = sign.VerifyAttestation(tamperStatement(t, att), good)
	expectErr("tampered statement", err, sign.ErrSignatureMismatch, "statement")

	otherCA, err := startFulcio(ctx, s.oidc.URL) // a CA nobody trusts for this deployment
	if err != nil {
		t.Fatal(err)
	}
	defer otherCA.Close()
	untrusted := good
	untrusted.TrustedRoot, _ = s.trustedRootWithFulcio(t, true, otherCA)
	_, err = sign.VerifyBlob(blob, bytes.NewReader(artifact), untrusted)
	expectErr("untrusted Fulcio root", err, sign.ErrUntrustedRoot, "trusted Fulcio root", job.SAN())

	noRekor, _ := s.trustedRoot(t, false)
	untrustedLog := good
	untrustedLog.TrustedRoot = noRekor
	_, err = sign.VerifyBlob(blob, bytes.NewReader(artifact), untrustedLog)
	expectErr("log not in trusted root", err, sign.ErrTlog)
}

// TestKeylessWithoutRekor: Fulcio + TSA only (a deployment without a log).
func TestKeylessWithoutRekor(t *testing.T) {
	s := getStack(t)
	signer := keylessSigner(t, s, false, mustToken(t, s, job, time.Now().Add(30*time.Minute)))
	artifact := []byte("x")
	b, err := signer.SignBlob(context.Background(), artifact)
	if err != nil {
		t.Fatal(err)
	}
	tr, _ := s.trustedRoot(t, false)
	o := sign.VerifyOptions{TrustedRoot: tr, CertIdentity: job.SAN(), CertOIDCIssuer: s.oidc.URL, RequireTimestamp: true}
	if _, err := sign.VerifyBlob(b, bytes.NewReader(artifact), o); err != nil {
		t.Fatal(err)
	}
	o.RequireTlog = true
	if _, err := sign.VerifyBlob(b, bytes.NewReader(artifact), o); !errors.Is(err, sign.ErrTlog) {
		t.Fatalf("RequireTlog on a bundle without entry: %v", err)
	}
}

// TestExpiredToken: CheckToken rejects it before a build would start, and
// the signer refuses to send it to Fulcio.
func TestExpiredToken(t *testing.T) {
	s := getStack(t)
	tok := mustToken(t, s, job, time.Now().Add(-time.Minute))
	_, err := sign.CheckToken(tok, time.Now())
	if !errors.Is(err, sign.ErrTokenExpired) {
		t.Fatalf("CheckToken: %v", err)
	}
	if strings.Contains(err.Error(), tok) {
		t.Fatal("error leaks the token")
	}
	t.Logf("expired: %v", err)
	_, err = keylessSigner(t, s, false, tok).SignBlob(context.Background(), []byte("x"))
	if !errors.Is(err, sign.ErrTokenExpired) {
		t.Fatalf("signer: %v", err)
	}

	info, err := sign.CheckToken(mustToken(t, s, job, time.Now().Add(time.Hour)), time.Now())
	if err != nil || info.Issuer != s.oidc.URL || info.Audience[0] != "sigstore" {
		t.Fatalf("fresh token: %+v %v", info, err)
	}
}

// TestFulcioRejectsForeignToken: a token signed by a key Fulcio does not
// know fails at Fulcio, and the error does not echo the token.
func TestFulcioRejectsForeignToken(t *testing.T) {
	s := getStack(t)
	rogue, err := newOIDCIssuer()
	if err != nil {
		t.Fatal(err)
	}
	defer rogue.Close()
	rogue.URL = s.oidc.URL // claims the trusted issuer, signed with another key
	tok, err := rogue.token(job, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	_, err = keylessSigner(t, s, false, tok).SignBlob(context.Background(), []byte("x"))
	if err == nil || !strings.Contains(err.Error(), "fulcio") {
		t.Fatalf("got %v, want a Fulcio error", err)
	}
	if strings.Contains(err.Error(), tok) {
		t.Fatal("error leaks the token")
	}
	t.Logf("foreign token: %v", err)
}

// tamperStatement swaps the subject digest inside a DSSE bundle's payload.
func tamperStatement(t *testing.T, bundleJSON []byte) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(bundleJSON, &m); err != nil {
		t.Fatal(err)
	}
	env := m["dsseEnvelope"].(map[string]any)
	var payload []byte
	if err := json.Unmarshal([]byte(`"`+env["payload"].(string)+`"`), &payload); err != nil {
		t.Fatal(err)
	}
	evil := slsaStatement(t, "hello.tar", []byte("a trojan"))
	if bytes.Equal(payload, evil) {
		t.Fatal("tampering changed nothing")
	}
	enc, _ := json.Marshal(evil)
	env["payload"] = strings.Trim(string(enc), `"`)
	out, _ := json.Marshal(m)
	return out
}
