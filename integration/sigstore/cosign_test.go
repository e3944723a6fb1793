package sigstore_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/sign"
)

// cosign runs the real cosign v2 CLI (built and cached by cosignTool).
type cosign struct {
	bin string
	dir string
}

var (
	cosignOnce sync.Once
	cosignBin  string
)

func newCosign(t *testing.T) *cosign {
	t.Helper()
	cosignOnce.Do(func() { cosignBin = cosignTool.ensure(t) })
	if cosignBin == "" {
		cosignBin = cosignTool.ensure(t) // report the missing binary in this test too
	}
	return &cosign{bin: cosignBin, dir: t.TempDir()}
}

// run executes cosign in c.dir. Its environment keeps it offline and
// local: a private HOME and TUF_ROOT, and proxies that point at a closed
// loopback port, so an accidental attempt to reach the public Sigstore
// instance fails on 127.0.0.1 instead of leaving the machine.
func (c *cosign) run(env []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Dir = c.dir
	cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + c.dir,
		"TUF_ROOT=" + filepath.Join(c.dir, ".sigstore"),
		"HTTPS_PROXY=http://127.0.0.1:9", "HTTP_PROXY=http://127.0.0.1:9", "NO_PROXY=",
	}, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (c *cosign) mustPass(t *testing.T, env []string, args ...string) {
	t.Helper()
	out, err := c.run(env, args...)
	if err != nil {
		t.Fatalf("cosign %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("cosign %s: %s", args[0], strings.TrimSpace(out))
}

func (c *cosign) mustFail(t *testing.T, why string, env []string, args ...string) {
	t.Helper()
	out, err := c.run(env, args...)
	if err == nil {
		t.Fatalf("cosign %s accepted %s:\n%s", strings.Join(args, " "), why, out)
	}
	t.Logf("cosign rejects %s: %s", why, lastLine(out))
}

func (c *cosign) write(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(c.dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// signKeyed writes the artifact, its blob bundle, the provenance bundle and
// an empty trusted root into c.dir.
func (c *cosign) signKeyed(t *testing.T, s sign.Signer, artifact []byte) {
	t.Helper()
	ctx := context.Background()
	blob, err := s.SignBlob(ctx, artifact)
	if err != nil {
		t.Fatal(err)
	}
	att, err := s.SignDSSE(ctx, sign.InTotoPayloadType, slsaStatement(t, "hello.tar", artifact))
	if err != nil {
		t.Fatal(err)
	}
	c.write(t, "hello.tar", artifact)
	c.write(t, "hello.tar"+sign.BundleSuffix, blob)
	c.write(t, "provenance"+sign.BundleSuffix, att)
	c.write(t, "evil.tar", append(artifact, '!'))
	c.write(t, "empty_root.json", []byte(sign.EmptyTrustedRootJSON))
}

// The flags cosign v2 needs for key-based bundles without a log entry.
var keyFlags = []string{"--key", "cosign.pub", "--trusted-root", "empty_root.json", "--insecure-ignore-tlog=true"}

func verifyBlobArgs(bundle, artifact string, flags []string) []string {
	return append(append([]string{"verify-blob", "--bundle", bundle}, flags...), artifact)
}

func verifyAttArgs(bundle, typ, artifact string, flags []string) []string {
	return append(append([]string{"verify-blob-attestation", "--bundle", bundle, "--type", typ}, flags...), artifact)
}

// TestCosignVerifiesKeyBundles: bundles signed with a key from our
// GenerateKeyPair verify with `cosign verify-blob` and
// `cosign verify-blob-attestation --type slsaprovenance1`, and cosign
// rejects them for a modified artifact.
func TestCosignVerifiesKeyBundles(t *testing.T) {
	c := newCosign(t)
	priv, _, err := sign.GenerateKeyPair(c.dir, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := sign.LoadKey(priv, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := sign.NewKeySigner(k, sign.KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.signKeyed(t, s, []byte("hello.tar contents\n"))

	c.mustPass(t, nil, verifyBlobArgs("hello.tar.sigstore.json", "hello.tar", keyFlags)...)
	c.mustPass(t, nil, verifyAttArgs("provenance.sigstore.json", "slsaprovenance1", "hello.tar", keyFlags)...)

	c.mustFail(t, "a modified artifact", nil, verifyBlobArgs("hello.tar.sigstore.json", "evil.tar", keyFlags)...)
	c.mustFail(t, "an artifact not in the statement", nil, verifyAttArgs("provenance.sigstore.json", "slsaprovenance1", "evil.tar", keyFlags)...)
	c.mustFail(t, "the wrong predicate type", nil, verifyAttArgs("provenance.sigstore.json", "spdxjson", "hello.tar", keyFlags)...)
	c.mustFail(t, "a blob bundle as attestation", nil, verifyAttArgs("hello.tar.sigstore.json", "slsaprovenance1", "hello.tar", keyFlags)...)
}

// TestCosignVerifiesKeyBundlesWithTimestamp: a key signature timestamped
// by the TSA verifies with --use-signed-timestamps and a trusted root that
// holds the TSA chain.
func TestCosignVerifiesKeyBundlesWithTimestamp(t *testing.T) {
	st := getStack(t)
	c := newCosign(t)
	if _, _, err := sign.GenerateKeyPair(c.dir, nil); err != nil {
		t.Fatal(err)
	}
	k, err := sign.LoadKey(filepath.Join(c.dir, "cosign.key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := sign.NewKeySigner(k, sign.KeyOptions{TSAURL: st.tsa.URL})
	c.signKeyed(t, s, []byte("dated\n"))
	tr, trPath := st.trustedRoot(t, false)
	flags := []string{"--key", "cosign.pub", "--trusted-root", trPath, "--use-signed-timestamps", "--insecure-ignore-tlog=true"}
	c.mustPass(t, nil, verifyBlobArgs("hello.tar.sigstore.json", "hello.tar", flags)...)
	c.mustPass(t, nil, verifyAttArgs("provenance.sigstore.json", "slsaprovenance1", "hello.tar", flags)...)

	pub, _ := sign.LoadPublicKey(filepath.Join(c.dir, "cosign.pub"))
	bundle, _ := os.ReadFile(filepath.Join(c.dir, "hello.tar.sigstore.json"))
	res, err := sign.VerifyBlob(bundle, strings.NewReader("dated\n"), sign.VerifyOptions{PublicKey: pub, TrustedRoot: tr, RequireTimestamp: true})
	if err != nil || len(res.Timestamps) != 1 {
		t.Fatalf("our verifier: %+v %v", res, err)
	}
}

// TestCosignKeyTypes: besides P-256 (what GenerateKeyPair and cosign
// generate-key-pair create), Ed25519 and P-384 keys give bundles cosign
// verifies. cosign loads a --key verifier with SHA-256 unless told
// otherwise, so P-384 needs --signature-digest-algorithm sha384.
func TestCosignKeyTypes(t *testing.T) {
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	for _, k := range []struct {
		name  string
		key   crypto.Signer
		extra []string
	}{
		{"ed25519", ed, nil},
		{"p384", p384, []string{"--signature-digest-algorithm", "sha384"}},
	} {
		t.Run(k.name, func(t *testing.T) {
			c := newCosign(t)
			s, err := sign.NewKeySigner(k.key, sign.KeyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			c.signKeyed(t, s, []byte(k.name))
			pubPEM, err := cryptoutilsPEM(k.key.Public())
			if err != nil {
				t.Fatal(err)
			}
			c.write(t, "cosign.pub", pubPEM)
			flags := append(append([]string{}, keyFlags...), k.extra...)
			c.mustPass(t, nil, verifyBlobArgs("hello.tar.sigstore.json", "hello.tar", flags)...)
			c.mustPass(t, nil, verifyAttArgs("provenance.sigstore.json", "slsaprovenance1", "hello.tar", flags)...)
			c.mustFail(t, "a modified artifact", nil, verifyBlobArgs("hello.tar.sigstore.json", "evil.tar", flags)...)
			if k.extra != nil {
				c.mustFail(t, "P-384 without --signature-digest-algorithm", nil, verifyAttArgs("provenance.sigstore.json", "slsaprovenance1", "hello.tar", keyFlags)...)
			}
		})
	}
}

// TestCosignGenerateKeyPairReadable: cosign's own cosign.key (encrypted,
// COSIGN_PASSWORD) loads with LoadKey, and what we sign with it verifies
// with cosign against cosign's cosign.pub.
func TestCosignGenerateKeyPairReadable(t *testing.T) {
	c := newCosign(t)
	c.mustPass(t, []string{"COSIGN_PASSWORD=correct horse"}, "generate-key-pair")
	k, err := sign.LoadKey(filepath.Join(c.dir, "cosign.key"), []byte("correct horse"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sign.LoadKey(filepath.Join(c.dir, "cosign.key"), []byte("battery staple")); !errors.Is(err, sign.ErrWrongPassword) {
		t.Fatalf("wrong password: %v", err)
	}
	pub, err := sign.LoadPublicKey(filepath.Join(c.dir, "cosign.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := sign.KeyID(pub); id == "" {
		t.Fatal("no key id")
	}
	s, _ := sign.NewKeySigner(k, sign.KeyOptions{})
	c.signKeyed(t, s, []byte("signed with cosign's key\n"))
	c.mustPass(t, nil, verifyBlobArgs("hello.tar.sigstore.json", "hello.tar", keyFlags)...)
	c.mustPass(t, nil, verifyAttArgs("provenance.sigstore.json", "slsaprovenance1", "hello.tar", keyFlags)...)

	// And cosign's own signature over the same artifact verifies with ours.
	c.mustPass(t, []string{"COSIGN_PASSWORD=correct horse"}, "sign-blob", "--yes", "--key", "cosign.key",
		"--new-bundle-format", "--bundle", "cosign-made.sigstore.json", "--tlog-upload=false", "hello.tar")
	b, _ := os.ReadFile(filepath.Join(c.dir, "cosign-made.sigstore.json"))
	if _, err := sign.VerifyBlob(b, strings.NewReader("signed with cosign's key\n"), sign.VerifyOptions{PublicKey: pub}); err != nil {
		t.Fatalf("cosign-made bundle: %v\n%s", err, b)
	}
}

// TestCosignVerifiesKeylessBundles: keyless bundles from the local stack
// (Fulcio certificate, RFC 3161 timestamp, Rekor v2 entry) verify with
// cosign given the deployment's trusted root and the identity; cosign checks
// the log entry (no --insecure-ignore-tlog). The local Fulcio has no CT
// log, hence --insecure-ignore-sct.
func TestCosignVerifiesKeylessBundles(t *testing.T) {
	st := getStack(t)
	c := newCosign(t)
	signer := keylessSigner(t, st, true, mustToken(t, st, job, time.Now().Add(30*time.Minute)))
	artifact := []byte("keyless artifact\n")
	ctx := context.Background()
	blob, err := signer.SignBlob(ctx, artifact)
	if err != nil {
		t.Fatal(err)
	}
	att, err := signer.SignDSSE(ctx, sign.InTotoPayloadType, slsaStatement(t, "hello.tar", artifact))
	if err != nil {
		t.Fatal(err)
	}
	c.write(t, "hello.tar", artifact)
	c.write(t, "evil.tar", []byte("evil"))
	c.write(t, "hello.tar.sigstore.json", blob)
	c.write(t, "provenance.sigstore.json", att)
	_, trPath := st.trustedRoot(t, true)

	id := func(san, iss string) []string {
		return []string{"--trusted-root", trPath, "--certificate-identity", san, "--certificate-oidc-issuer", iss,
			"--use-signed-timestamps", "--insecure-ignore-sct=true"}
	}
	good := id(job.SAN(), st.oidc.URL)
	c.mustPass(t, nil, verifyBlobArgs("hello.tar.sigstore.json", "hello.tar", good)...)
	c.mustPass(t, nil, verifyAttArgs("provenance.sigstore.json", "slsaprovenance1", "hello.tar", good)...)
	c.mustFail(t, "a wrong SAN", nil, verifyBlobArgs("hello.tar.sigstore.json", "hello.tar", id(gitlabJob{"group/project", "evil"}.SAN(), st.oidc.URL))...)
	c.mustFail(t, "a wrong issuer", nil, verifyBlobArgs("hello.tar.sigstore.json", "hello.tar", id(job.SAN(), "https://gitlab.com"))...)
	c.mustFail(t, "a modified artifact", nil, verifyBlobArgs("hello.tar.sigstore.json", "evil.tar", good)...)
}
