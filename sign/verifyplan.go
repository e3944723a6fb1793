package sign

import (
	"errors"
	"fmt"
	"time"

	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
)

// plan is the sigstore-go configuration for one verification.
type plan struct {
	trusted      root.TrustedMaterial
	verifierOpts []verify.VerifierOption
	policyOpts   []verify.PolicyOption
	tlog         bool
}

// planVerification turns VerifyOptions plus what the bundle contains into
// sigstore-go options. Mismatches that sigstore-go would report obscurely
// (key vs certificate, required timestamp or log entry absent) are caught
// here with a specific error. skipTlog leaves log entries unverified (used
// only to diagnose a failure).
func planVerification(b *bundle.Bundle, o VerifyOptions, skipTlog bool) (*plan, error) {
	vm := b.GetVerificationMaterial()
	f := bundleFacts{
		hasCert: vm.GetCertificate() != nil || vm.GetX509CertificateChain() != nil,
		nTSA:    len(vm.GetTimestampVerificationData().GetRfc3161Timestamps()),
		nTlog:   len(vm.GetTlogEntries()),
	}
	for _, e := range vm.GetTlogEntries() {
		if e.GetIntegratedTime() > 0 {
			f.integrated = true
		}
	}
	switch {
	case o.PublicKey != nil:
		return planKey(b, o, f)
	case o.TrustedRoot != nil:
		return planKeyless(vm.GetPublicKey().GetHint(), o, f, skipTlog)
	}
	return nil, errors.New("VerifyOptions needs a TrustedRoot (keyless bundles) or a PublicKey (key bundles)")
}

// bundleFacts is what a bundle carries that decides how it is verified.
type bundleFacts struct {
	hasCert     bool
	nTSA, nTlog int
	// integrated: Rekor v1 entries carry a signed integrated time; v2
	// entries do not.
	integrated bool
}

// planKey plans the verification of a bundle signed with a key.
func planKey(b *bundle.Bundle, o VerifyOptions, f bundleFacts) (*plan, error) {
	tr := o.TrustedRoot
	p := &plan{}
	if o.CertIdentity != "" || o.CertIdentityRegexp != "" || o.CertOIDCIssuer != "" || o.CertOIDCIssuerRegexp != "" {
		return nil, errors.New("certificate identity options apply to keyless bundles; they cannot constrain a public key")
	}
	if f.hasCert {
		return nil, fmt.Errorf("%w: bundle was signed keylessly (%s), not with the given public key; verify it with a trusted root and an identity",
			ErrUntrustedRoot, describeCert(b))
	}
	verifier, err := verifierFor(o.PublicKey)
	if err != nil {
		return nil, err
	}
	key := root.NewExpiringKey(verifier, time.Time{}, time.Time{})
	// The hint in the bundle is unauthenticated; the given key is tried
	// whatever it says (as cosign does).
	km := root.NewTrustedPublicKeyMaterial(func(string) (root.TimeConstrainedVerifier, error) { return key, nil })
	p.trusted = km
	if tr != nil {
		p.trusted = root.TrustedMaterialCollection{km, tr}
	}
	p.policyOpts = []verify.PolicyOption{verify.WithKey()}

	switch {
	case o.RequireTimestamp:
		if tr == nil {
			return nil, errors.New("RequireTimestamp needs a TrustedRoot that lists the timestamp authority")
		}
		if f.nTSA == 0 {
			return nil, fmt.Errorf("%w: bundle has no RFC 3161 timestamp", ErrTimestamp)
		}
		p.verifierOpts = append(p.verifierOpts, verify.WithSignedTimestamps(1))
	case f.nTSA > 0 && tr != nil && len(tr.TimestampingAuthorities()) > 0:
		p.verifierOpts = append(p.verifierOpts, verify.WithSignedTimestamps(1))
	default:
		p.verifierOpts = append(p.verifierOpts, verify.WithNoObserverTimestamps())
	}
	if o.RequireTlog {
		if tr == nil {
			return nil, errors.New("RequireTlog needs a TrustedRoot that lists the transparency log")
		}
		if f.nTlog == 0 {
			return nil, fmt.Errorf("%w: bundle has no transparency log entry", ErrTlog)
		}
		p.verifierOpts = append(p.verifierOpts, verify.WithTransparencyLog(1))
		p.tlog = true
	}
	return p, nil
}

// planKeyless plans the verification of a bundle signed with a Fulcio
// certificate, against o.TrustedRoot and an identity policy.
func planKeyless(keyHint string, o VerifyOptions, f bundleFacts, skipTlog bool) (*plan, error) {
	tr := o.TrustedRoot
	p := &plan{}
	if !f.hasCert {
		return nil, fmt.Errorf("%w: bundle was signed with a key (hint %q), not a Fulcio certificate; verify it with the public key",
			ErrUntrustedRoot, keyHint)
	}
	if o.CertIdentity == "" && o.CertIdentityRegexp == "" {
		return nil, errors.New("keyless verification needs CertIdentity or CertIdentityRegexp (cosign --certificate-identity)")
	}
	if o.CertOIDCIssuer == "" && o.CertOIDCIssuerRegexp == "" {
		return nil, errors.New("keyless verification needs CertOIDCIssuer or CertOIDCIssuerRegexp (cosign --certificate-oidc-issuer)")
	}
	id, err := verify.NewShortCertificateIdentity(o.CertOIDCIssuer, o.CertOIDCIssuerRegexp, o.CertIdentity, o.CertIdentityRegexp)
	if err != nil {
		return nil, fmt.Errorf("identity policy: %w", err)
	}
	p.trusted = tr
	p.policyOpts = []verify.PolicyOption{verify.WithCertificateIdentity(id)}
	if len(tr.CTLogs()) > 0 {
		p.verifierOpts = append(p.verifierOpts, verify.WithSignedCertificateTimestamps(1))
	}
	if o.RequireTlog && f.nTlog == 0 {
		return nil, fmt.Errorf("%w: bundle has no transparency log entry", ErrTlog)
	}
	if !skipTlog && (o.RequireTlog || (f.nTlog > 0 && len(tr.RekorLogs()) > 0)) {
		p.verifierOpts = append(p.verifierOpts, verify.WithTransparencyLog(1))
		p.tlog = true
	}
	if f.nTSA == 0 && !(f.integrated && p.tlog) {
		return nil, fmt.Errorf("%w: bundle has no RFC 3161 timestamp and no verifiable log integrated time; "+
			"without one the short-lived certificate cannot be checked at signing time", ErrTimestamp)
	}
	if o.RequireTimestamp && f.nTSA == 0 {
		return nil, fmt.Errorf("%w: bundle has no RFC 3161 timestamp", ErrTimestamp)
	}
	p.verifierOpts = append(p.verifierOpts, verify.WithObserverTimestamps(1))
	if o.RequireTimestamp {
		p.verifierOpts = append(p.verifierOpts, verify.WithSignedTimestamps(1))
	}
	return p, nil
}
