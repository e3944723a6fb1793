package sign

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"fmt"

	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

// signerKeypair adapts a crypto.Signer to sigstore-go's sign.Keypair (which
// has no "bring your own key" implementation; cosign's adapter is internal).
//
// The signing algorithm is the Sigstore registry default for ECDSA keys
// (P-256/SHA-256, P-384/SHA-384, P-521/SHA-512) and pure Ed25519 for
// Ed25519 keys. Pure, not Ed25519ph: `cosign verify-blob --key` (v2) checks
// Ed25519 signatures as pure Ed25519 only. The bundle's message digest of
// an Ed25519 blob signature is its SHA-512 (the spec needs some digest;
// verifiers recompute and compare it). Rekor's hashedrekord would need
// Ed25519ph, but key signing here never uses a log.
type signerKeypair struct {
	signer crypto.Signer
	alg    signature.AlgorithmDetails
	hint   []byte
	pemPub string
	keyAlg string
}

func newSignerKeypair(s crypto.Signer) (*signerKeypair, error) {
	pub := s.Public()
	if err := checkPublicKey(pub); err != nil {
		return nil, err
	}
	alg, err := signature.GetDefaultAlgorithmDetails(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	pemPub, err := cryptoutils.MarshalPublicKeyToPEM(pub)
	if err != nil {
		return nil, err
	}
	keyAlg := "ECDSA"
	if _, ok := pub.(ed25519.PublicKey); ok {
		keyAlg = "ED25519"
	}
	return &signerKeypair{
		signer: s,
		alg:    alg,
		hint:   []byte(base64.StdEncoding.EncodeToString(sum[:])),
		pemPub: string(pemPub),
		keyAlg: keyAlg,
	}, nil
}

func (k *signerKeypair) GetHashAlgorithm() protocommon.HashAlgorithm {
	if k.keyAlg == "ED25519" {
		return protocommon.HashAlgorithm_SHA2_512
	}
	return k.alg.GetProtoHashType()
}

func (k *signerKeypair) GetSigningAlgorithm() protocommon.PublicKeyDetails {
	return k.alg.GetSignatureAlgorithm()
}

func (k *signerKeypair) GetHint() []byte                  { return k.hint }
func (k *signerKeypair) GetKeyAlgorithm() string          { return k.keyAlg }
func (k *signerKeypair) GetPublicKey() crypto.PublicKey   { return k.signer.Public() }
func (k *signerKeypair) GetPublicKeyPem() (string, error) { return k.pemPub, nil }

// SignData signs data and returns the signature and the digest a bundle's
// messageDigest holds. ECDSA signs that digest; Ed25519 signs the data.
func (k *signerKeypair) SignData(_ context.Context, data []byte) ([]byte, []byte, error) {
	if k.keyAlg == "ED25519" {
		digest := sha512.Sum512(data)
		sig, err := k.signer.Sign(rand.Reader, data, crypto.Hash(0))
		if err != nil {
			return nil, nil, fmt.Errorf("signing: %w", err)
		}
		return sig, digest[:], nil
	}
	hf := k.alg.GetHashType()
	h := hf.New()
	h.Write(data)
	digest := h.Sum(nil)
	sig, err := k.signer.Sign(rand.Reader, digest, hf)
	if err != nil {
		return nil, nil, fmt.Errorf("signing: %w", err)
	}
	return sig, digest, nil
}

// verifierFor returns the verifier matching how signerKeypair signs with a
// key of this type.
func verifierFor(pub crypto.PublicKey) (signature.Verifier, error) {
	if err := checkPublicKey(pub); err != nil {
		return nil, err
	}
	return signature.LoadDefaultVerifier(pub)
}
