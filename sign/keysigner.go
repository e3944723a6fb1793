package sign

import (
	"context"
	"crypto"
	"fmt"
	"net/http"

	sgsign "github.com/sigstore/sigstore-go/pkg/sign"
)

// KeyOptions configures NewKeySigner.
type KeyOptions struct {
	// TSAURL, when set, is the full RFC 3161 endpoint (for the Sigstore TSA:
	// <base>/api/v1/timestamp). A timestamp proves when the signature was
	// made, so a verifier can reject signatures made after a key was known
	// to be compromised; without one a key signature is undated.
	TSAURL string
	// HTTPClient is used for the TSA (nil: 30 s timeout, default transport).
	HTTPClient *http.Client
}

type keySigner struct {
	kp  *signerKeypair
	id  string
	tsa []*sgsign.TimestampAuthority
}

// NewKeySigner signs with a long-lived key (see LoadKey). Bundles carry
// the public key hint, not the key: verifiers need cosign.pub.
func NewKeySigner(key crypto.Signer, opts KeyOptions) (Signer, error) {
	if key == nil {
		return nil, fmt.Errorf("%w: nil key", ErrUnsupportedKey)
	}
	kp, err := newSignerKeypair(key)
	if err != nil {
		return nil, err
	}
	id, err := KeyID(key.Public())
	if err != nil {
		return nil, err
	}
	s := &keySigner{kp: kp, id: id}
	if opts.TSAURL != "" {
		s.tsa = []*sgsign.TimestampAuthority{newTSA(opts.TSAURL, opts.HTTPClient)}
	}
	return s, nil
}

func (s *keySigner) Identity() string { return s.id }

func (s *keySigner) SignBlob(ctx context.Context, data []byte) ([]byte, error) {
	return s.sign(ctx, &sgsign.PlainData{Data: data})
}

func (s *keySigner) SignDSSE(ctx context.Context, payloadType string, payload []byte) ([]byte, error) {
	c, err := dsseContent(payloadType, payload)
	if err != nil {
		return nil, err
	}
	return s.sign(ctx, c)
}

func (s *keySigner) sign(ctx context.Context, c sgsign.Content) ([]byte, error) {
	pb, err := sgsign.Bundle(c, s.kp, sgsign.BundleOptions{
		TimestampAuthorities: s.tsa,
		Context:              ctx,
	})
	if err != nil {
		return nil, fmt.Errorf("signing with %s: %w", s.id, err)
	}
	return marshalBundle(pb)
}

// newTSA builds the RFC 3161 client. sigstore-go's TSA client is stateless
// after construction, so one instance serves concurrent signatures.
func newTSA(url string, hc *http.Client) *sgsign.TimestampAuthority {
	o := &sgsign.TimestampAuthorityOptions{URL: url, Retries: 2}
	if hc != nil {
		o.Transport = hc.Transport
		o.Timeout = hc.Timeout
	}
	return sgsign.NewTimestampAuthority(o)
}
