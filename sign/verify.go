package sign

import (
	"crypto"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/fulcio/certificate"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
)

// VerifyOptions says what to trust. Exactly one of TrustedRoot (keyless
// bundles) and PublicKey (key bundles) is the trust anchor; with a
// PublicKey, a TrustedRoot may be added to check the bundle's timestamp or
// log entry.
type VerifyOptions struct {
	// TrustedRoot holds the Fulcio CAs, TSAs, Rekor and CT logs to trust
	// (LoadTrustedRoot). If it lists CT logs, the certificate must carry a
	// valid SCT, as cosign requires by default.
	TrustedRoot *root.TrustedRoot
	// PublicKey verifies key-based bundles (LoadPublicKey of cosign.pub).
	PublicKey crypto.PublicKey

	// Keyless identity policy, with cosign's flag semantics: the exact
	// value or an (unanchored, Go syntax) regexp; one SAN criterion and one
	// issuer criterion are required, since a certificate from a trusted
	// Fulcio says only that *someone* with an OIDC login signed.
	CertIdentity         string // --certificate-identity
	CertIdentityRegexp   string // --certificate-identity-regexp
	CertOIDCIssuer       string // --certificate-oidc-issuer
	CertOIDCIssuerRegexp string // --certificate-oidc-issuer-regexp

	// RequireTlog demands a transparency-log entry verified against a log
	// in TrustedRoot: proof the signature is publicly auditable. Keyless
	// entries present in the bundle are verified whenever TrustedRoot knows
	// a log, required or not.
	RequireTlog bool
	// RequireTimestamp demands an RFC 3161 timestamp from a TSA in
	// TrustedRoot. Keyless bundles always need some trusted time (TSA or a
	// Rekor v1 integrated time) to check the short-lived certificate.
	RequireTimestamp bool
}

// Result describes a verified bundle. Everything in it has been checked.
type Result struct {
	// Identity is the certificate SAN (keyless) or KeyID of the public key.
	Identity string
	// Issuer is the OIDC issuer in the certificate (keyless only).
	Issuer string
	// Certificate has all Fulcio certificate extensions (keyless only),
	// e.g. SourceRepositoryURI, SourceRepositoryRef, RunInvocationURI.
	Certificate *certificate.Summary
	// Timestamps are the verified times of signing.
	Timestamps []Timestamp
	// TlogVerified is true when a transparency-log entry was verified.
	TlogVerified bool
}

// Timestamp is one verified time of signing.
type Timestamp struct {
	Source string // "TimestampAuthority" or "Tlog"
	URI    string
	Time   time.Time
}

// VerifyBlob checks a blob bundle against the artifact's bytes, read from
// artifact, and the trust and identity policy in o.
func VerifyBlob(bundleJSON []byte, artifact io.Reader, o VerifyOptions) (*Result, error) {
	if artifact == nil {
		return nil, errors.New("VerifyBlob needs the artifact")
	}
	b, err := parseBundle(bundleJSON)
	if err != nil {
		return nil, err
	}
	if b.GetMessageSignature() == nil {
		return nil, fmt.Errorf("%w: bundle holds a DSSE envelope (an attestation), not a blob signature", ErrMalformedBundle)
	}
	return verifyBundle(b, verify.WithArtifact(artifact), o)
}

// VerifyAttestation checks a DSSE bundle whose payload is an in-toto
// statement and returns the statement bytes exactly as signed. It checks
// the signature over the envelope, not what the statement says: the caller
// must compare its subjects with the artifacts it cares about.
func VerifyAttestation(bundleJSON []byte, o VerifyOptions) (statement []byte, res *Result, err error) {
	b, err := parseBundle(bundleJSON)
	if err != nil {
		return nil, nil, err
	}
	env := b.GetDsseEnvelope()
	if env == nil {
		return nil, nil, fmt.Errorf("%w: bundle holds a blob signature, not a DSSE attestation", ErrMalformedBundle)
	}
	if env.GetPayloadType() != InTotoPayloadType {
		return nil, nil, fmt.Errorf("%w: DSSE payload type %q, want %q", ErrMalformedBundle, env.GetPayloadType(), InTotoPayloadType)
	}
	res, err = verifyBundle(b, verify.WithoutArtifactUnsafe(), o)
	if err != nil {
		return nil, nil, err
	}
	return append([]byte(nil), env.GetPayload()...), res, nil
}

func verifyBundle(b *bundle.Bundle, artifact verify.ArtifactPolicyOption, o VerifyOptions) (*Result, error) {
	p, err := planVerification(b, o, false)
	if err != nil {
		return nil, err
	}
	v, err := verify.NewVerifier(p.trusted, p.verifierOpts...)
	if err != nil {
		return nil, fmt.Errorf("configuring verifier: %w", err)
	}
	vr, err := v.Verify(b, verify.NewPolicy(artifact, p.policyOpts...))
	if err != nil {
		err = classify(err, b, o)
		if errors.Is(err, ErrTlog) && b.GetDsseEnvelope() != nil {
			err = explainTlogFailure(err, b, o)
		}
		return nil, err
	}
	r := &Result{TlogVerified: p.tlog}
	if c := vr.Signature.Certificate; c != nil {
		sum := *c
		r.Certificate, r.Identity, r.Issuer = &sum, c.SubjectAlternativeName, c.Issuer
	} else if r.Identity, err = KeyID(o.PublicKey); err != nil {
		return nil, err
	}
	// sigstore-go lists a TSA timestamp once per policy that checked it
	// (observer and signed); report each once.
	seen := map[Timestamp]bool{}
	for _, ts := range vr.VerifiedTimestamps {
		t := Timestamp{Source: ts.Type, URI: ts.URI, Time: ts.Timestamp}
		if !seen[t] {
			seen[t] = true
			r.Timestamps = append(r.Timestamps, t)
		}
	}
	return r, nil
}

// explainTlogFailure tells a modified DSSE bundle from a bad log entry. The
// log entry is checked first and covers the envelope, so a modified
// statement first shows up as a log inclusion failure. Verifying again
// without the log says whether the signature itself still holds: if not,
// the content was tampered with, which is the error worth reporting.
func explainTlogFailure(tlogErr error, b *bundle.Bundle, o VerifyOptions) error {
	o.RequireTlog = false
	p, err := planVerification(b, o, true)
	if err != nil {
		return tlogErr
	}
	v, err := verify.NewVerifier(p.trusted, p.verifierOpts...)
	if err != nil {
		return tlogErr
	}
	if _, err := v.Verify(b, verify.NewPolicy(verify.WithoutArtifactUnsafe(), p.policyOpts...)); err != nil {
		if err = classify(err, b, o); errors.Is(err, ErrSignatureMismatch) {
			return err
		}
	}
	return tlogErr
}
