package sign

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/secure-systems-lab/go-securesystemslib/encrypted"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

// PEM block types of cosign's encrypted private key. cosign v2 writes the
// SIGSTORE one; older cosign wrote the COSIGN one. Both hold a PKCS #8 key
// encrypted with scrypt + secretbox (go-securesystemslib "encrypted").
const (
	pemEncryptedSigstoreKey = "ENCRYPTED SIGSTORE PRIVATE KEY"
	pemEncryptedCosignKey   = "ENCRYPTED COSIGN PRIVATE KEY"
)

// LoadKey reads a private key for NewKeySigner: an encrypted cosign.key
// (password as given to cosign, from COSIGN_PASSWORD at the CLI; nil means
// the empty password), or an unencrypted PEM key — PKCS #8 ("PRIVATE KEY",
// ECDSA or Ed25519) or SEC 1 ("EC PRIVATE KEY"). Only ECDSA P-256/P-384/
// P-521 and Ed25519 are accepted: those are what Sigstore's algorithm
// registry pairs with a fixed hash, so a bundle says unambiguously how it
// was signed.
//
// Errors never contain key material or the password.
func LoadKey(path string, password []byte) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading private key: %w", err)
	}
	k, err := parsePrivateKey(data, password)
	if err != nil {
		return nil, fmt.Errorf("private key %s: %w", path, err)
	}
	return k, nil
}

func parsePrivateKey(data, password []byte) (crypto.Signer, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("not a PEM file")
	}
	if b2, _ := pem.Decode(rest); b2 != nil {
		// Defends against a bundle of keys where the wrong one would be
		// picked silently.
		return nil, errors.New("more than one PEM block")
	}
	var priv any
	var err error
	switch block.Type {
	case pemEncryptedSigstoreKey, pemEncryptedCosignKey:
		der, derr := encrypted.Decrypt(block.Bytes, password)
		if derr != nil {
			// encrypted reports a failed secretbox open the same way for a
			// wrong password and a corrupt file; say the likely one.
			return nil, fmt.Errorf("%w (or the key file is corrupt)", ErrWrongPassword)
		}
		priv, err = x509.ParsePKCS8PrivateKey(der)
	case "PRIVATE KEY":
		priv, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		priv, err = x509.ParseECPrivateKey(block.Bytes)
	case "ENCRYPTED PRIVATE KEY":
		// PKCS #8 with PBES2, as written by openssl; cryptoutils knows it.
		priv, err = cryptoutils.UnmarshalPEMToPrivateKey(pem.EncodeToMemory(block), cryptoutils.StaticPasswordFunc(password))
		if err != nil {
			return nil, fmt.Errorf("%w (or the key file is corrupt)", ErrWrongPassword)
		}
	default:
		return nil, fmt.Errorf("%w: PEM type %q (want an ECDSA or Ed25519 private key)", ErrUnsupportedKey, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing private key: %w", err)
	}
	signer, ok := priv.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: %T", ErrUnsupportedKey, priv)
	}
	if err := checkPublicKey(signer.Public()); err != nil {
		return nil, err
	}
	return signer, nil
}

// LoadPublicKey reads a PEM "PUBLIC KEY" (cosign.pub) for VerifyOptions.
func LoadPublicKey(path string) (crypto.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading public key: %w", err)
	}
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(data)
	if err != nil {
		return nil, fmt.Errorf("public key %s: %w", path, err)
	}
	if err := checkPublicKey(pub); err != nil {
		return nil, fmt.Errorf("public key %s: %w", path, err)
	}
	return pub, nil
}

// checkPublicKey accepts the key types this package signs and verifies with.
func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		return fmt.Errorf("%w: ECDSA curve %s", ErrUnsupportedKey, k.Curve.Params().Name)
	case ed25519.PublicKey:
		return nil
	}
	return fmt.Errorf("%w: %T (want ECDSA P-256/P-384/P-521 or Ed25519)", ErrUnsupportedKey, pub)
}

// KeyID is "key:" plus the hex SHA-256 of the PKIX DER public key — the
// same digest cosign puts (base64) in a bundle's public key hint.
func KeyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return "key:" + hex.EncodeToString(sum[:]), nil
}
