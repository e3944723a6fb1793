package sign

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"fmt"

	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"
)

// signerKeypair adapts a crypto.Signer to sigstore-go's sign.Keypair (which
// has no "bring your own key" implementation; cosign's adapter is internal).
//
// The signing algorithm is the Sigstore registry default for the key:
// ECDSA P-256/SHA-256, P-384/SHA-384, P-521/SHA-512, and Ed25519ph
// (SHA-512 pre-hash) for Ed25519 — as cosign does, because a blob bundle
// must carry a message digest and Rekor's hashedrekord accepts only
// pre-hashed signatures.
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
	alg, err := signature.GetDefaultAlgorithmDetails(pub, options.WithED25519ph())
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
	return k.alg.GetProtoHashType()
}

func (k *signerKeypair) GetSigningAlgorithm() protocommon.PublicKeyDetails {
	return k.alg.GetSignatureAlgorithm()
}

func (k *signerKeypair) GetHint() []byte                  { return k.hint }
func (k *signerKeypair) GetKeyAlgorithm() string          { return k.keyAlg }
func (k *signerKeypair) GetPublicKey() crypto.PublicKey   { return k.signer.Public() }
func (k *signerKeypair) GetPublicKeyPem() (string, error) { return k.pemPub, nil }

// SignData hashes data with the algorithm's hash and signs the digest. It
// returns the signature and the digest (what a bundle's messageDigest holds).
func (k *signerKeypair) SignData(_ context.Context, data []byte) ([]byte, []byte, error) {
	hf := k.alg.GetHashType()
	h := hf.New()
	h.Write(data)
	digest := h.Sum(nil)
	var opts crypto.SignerOpts = hf
	if k.keyAlg == "ED25519" {
		opts = &ed25519.Options{Hash: crypto.SHA512} // Ed25519ph
	}
	sig, err := k.signer.Sign(rand.Reader, digest, opts)
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
	return signature.LoadDefaultVerifier(pub, options.WithED25519ph())
}
