package sign

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestGenerateKeyPair(t *testing.T) {
	dir := t.TempDir()
	priv, pub, err := GenerateKeyPair(dir, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if priv != filepath.Join(dir, "cosign.key") || pub != filepath.Join(dir, "cosign.pub") {
		t.Fatalf("paths %s %s", priv, pub)
	}
	for p, mode := range map[string]os.FileMode{priv: 0o600, pub: 0o644} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s mode %v, want %v", p, fi.Mode().Perm(), mode)
		}
	}
	raw, _ := os.ReadFile(priv)
	blk, _ := pem.Decode(raw)
	if blk == nil || blk.Type != "ENCRYPTED SIGSTORE PRIVATE KEY" {
		t.Fatalf("private key PEM type: %+v", blk)
	}
	rawPub, _ := os.ReadFile(pub)
	if blk, _ := pem.Decode(rawPub); blk == nil || blk.Type != "PUBLIC KEY" {
		t.Fatalf("public key PEM type: %+v", blk)
	}

	k, err := LoadKey(priv, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		t.Fatalf("generated key is %T, want ECDSA P-256 as cosign", k)
	}
	pk, err := LoadPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(pk, k.Public()) {
		t.Fatal("cosign.pub does not match cosign.key")
	}
}

func TestGenerateKeyPairRefusesOverwrite(t *testing.T) {
	for _, existing := range []string{"cosign.key", "cosign.pub"} {
		dir := t.TempDir()
		p := filepath.Join(dir, existing)
		os.WriteFile(p, []byte("keep me"), 0o600)
		if _, _, err := GenerateKeyPair(dir, nil); !errors.Is(err, ErrKeyExists) {
			t.Fatalf("%s exists: got %v, want ErrKeyExists", existing, err)
		}
		if b, _ := os.ReadFile(p); !bytes.Equal(b, []byte("keep me")) {
			t.Fatalf("%s was modified", existing)
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 {
			t.Fatalf("left %d files behind", len(entries))
		}
	}
}
