package sign

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/secure-systems-lab/go-securesystemslib/encrypted"
)

func TestLoadKeyPlainPEM(t *testing.T) {
	dir := t.TempDir()
	p256 := newKey(t, "p256")
	p384 := newKey(t, "p384")
	ed := newKey(t, "ed25519")
	sec1, err := x509.MarshalECPrivateKey(p256.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, typ string
		der       []byte
		want      any
	}{
		{"p256-pkcs8", "PRIVATE KEY", pkcs8(t, p256), p256.Public()},
		{"p384-pkcs8", "PRIVATE KEY", pkcs8(t, p384), p384.Public()},
		{"ed25519-pkcs8", "PRIVATE KEY", pkcs8(t, ed), ed.Public()},
		{"p256-sec1", "EC PRIVATE KEY", sec1, p256.Public()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k, err := LoadKey(writePEM(t, dir, c.name+".pem", c.typ, c.der), nil)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(k.Public(), c.want) {
				t.Fatal("loaded key does not match")
			}
		})
	}
}

func TestLoadKeyEncryptedCosignFormats(t *testing.T) {
	dir := t.TempDir()
	// Fixtures use the cheaper legacy scrypt parameters (the KDF parameters
	// are stored in the file, so LoadKey reads either); cosign's own output
	// is covered by GenerateKeyPair's tests and the cosign CLI interop test.
	// The second case uses the empty password (COSIGN_PASSWORD=""), which
	// LoadKey must accept as nil.
	cases := []struct {
		typ, kind string
		pw        []byte
	}{
		{pemEncryptedSigstoreKey, "p256", []byte("s3cret")},
		{pemEncryptedCosignKey, "ed25519", []byte{}},
	}
	for i, c := range cases {
		k := newKey(t, c.kind)
		enc, err := encrypted.EncryptWithCustomKDFParameters(pkcs8(t, k), c.pw, encrypted.Legacy)
		if err != nil {
			t.Fatal(err)
		}
		path := writePEM(t, dir, fmt.Sprintf("key%d", i), c.typ, enc)
		pw := c.pw
		if len(pw) == 0 {
			pw = nil
		}
		got, err := LoadKey(path, pw)
		if err != nil {
			t.Fatalf("%s %s: %v", c.typ, c.kind, err)
		}
		if !reflect.DeepEqual(got.Public(), k.Public()) {
			t.Fatalf("%s %s: wrong key", c.typ, c.kind)
		}
		if i > 0 {
			continue // each scrypt derivation is slow (very, under -race)
		}
		_, err = LoadKey(path, []byte("wrong"))
		if !errors.Is(err, ErrWrongPassword) {
			t.Fatalf("%s %s: wrong password: got %v, want ErrWrongPassword", c.typ, c.kind, err)
		}
		if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "wrong\"") {
			t.Fatalf("error leaks the password: %v", err)
		}
		if _, err := LoadKey(path, nil); !errors.Is(err, ErrWrongPassword) {
			t.Fatalf("no password: got %v", err)
		}
	}
}

func TestLoadKeyRejects(t *testing.T) {
	dir := t.TempDir()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	rsaDER, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	notPEM := filepath.Join(dir, "garbage")
	os.WriteFile(notPEM, []byte("hello"), 0o600)
	two := filepath.Join(dir, "two.pem")
	one := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8(t, newKey(t, "p256"))})
	os.WriteFile(two, append(one, one...), 0o600)

	cases := []struct {
		name, path string
		want       error
	}{
		{"rsa", writePEM(t, dir, "rsa.pem", "PRIVATE KEY", rsaDER), ErrUnsupportedKey},
		{"cert-type", writePEM(t, dir, "cert.pem", "CERTIFICATE", []byte{1, 2, 3}), ErrUnsupportedKey},
		{"not-pem", notPEM, nil},
		{"two-blocks", two, nil},
		{"missing", filepath.Join(dir, "nope"), nil},
	}
	for _, c := range cases {
		_, err := LoadKey(c.path, nil)
		if err == nil {
			t.Errorf("%s: accepted", c.name)
			continue
		}
		if c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

func TestLoadPublicKey(t *testing.T) {
	dir := t.TempDir()
	for _, kind := range []string{"p256", "p384", "ed25519"} {
		k := newKey(t, kind)
		der, _ := x509.MarshalPKIXPublicKey(k.Public())
		pub, err := LoadPublicKey(writePEM(t, dir, kind+".pub", "PUBLIC KEY", der))
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		if !reflect.DeepEqual(pub, k.Public()) {
			t.Fatalf("%s: wrong key", kind)
		}
	}
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 1024)
	der, _ := x509.MarshalPKIXPublicKey(rsaKey.Public())
	if _, err := LoadPublicKey(writePEM(t, dir, "rsa.pub", "PUBLIC KEY", der)); !errors.Is(err, ErrUnsupportedKey) {
		t.Fatalf("rsa public key: got %v", err)
	}
}

func TestKeyID(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	id, err := KeyID(pub)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(id, "key:") || len(id) != len("key:")+64 {
		t.Fatalf("KeyID = %q", id)
	}
}
