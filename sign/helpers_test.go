package sign

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
)

// newKey returns a fresh private key of the named kind.
func newKey(t testing.TB, kind string) crypto.Signer {
	t.Helper()
	var k crypto.Signer
	var err error
	switch kind {
	case "p256":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "p384":
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ed25519":
		_, k, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("unknown key kind %q", kind)
	}
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// writePEM writes one PEM block to dir/name and returns the path.
func writePEM(t testing.TB, dir, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func pkcs8(t testing.TB, k crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// statement is a minimal SLSA v1 provenance statement for one artifact.
func statement(artifact []byte) []byte {
	sum := sha256.Sum256(artifact)
	return []byte(`{"_type":"https://in-toto.io/Statement/v1",` +
		`"subject":[{"name":"hello.tar","digest":{"sha256":"` + hex.EncodeToString(sum[:]) + `"}}],` +
		`"predicateType":"https://slsa.dev/provenance/v1",` +
		`"predicate":{"buildDefinition":{"buildType":"https://cleanroom.example/buildtype/v1","externalParameters":{"pipeline":"cleanroom.yaml"}},` +
		`"runDetails":{"builder":{"id":"https://cleanroom.example/runner"}}}}`)
}
