package sign

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/fulcio/certificate"
)

// classify maps a sigstore-go verification error to this package's
// sentinels by the stage that failed. sigstore-go (v1.3.0) reports stages
// only in message prefixes; the unit and integration tests pin each one, so
// a library upgrade that rewords them fails loudly rather than degrading
// errors to the generic case.
func classify(err error, b *bundle.Bundle, o VerifyOptions) error {
	msg := err.Error()
	switch {
	case strings.HasPrefix(msg, "failed to verify log inclusion"):
		return fmt.Errorf("%w: %w", ErrTlog, err)
	case strings.HasPrefix(msg, "failed to verify timestamps"):
		return fmt.Errorf("%w: no timestamp from a trusted timestamp authority verified: %w", ErrTimestamp, err)
	case strings.HasPrefix(msg, "failed to verify leaf certificate"):
		return fmt.Errorf("%w: certificate (%s) does not chain to a trusted Fulcio root at signing time: %w", ErrUntrustedRoot, describeCert(b), err)
	case strings.HasPrefix(msg, "failed to verify signed certificate timestamp"):
		return fmt.Errorf("%w: certificate has no valid SCT from a trusted CT log: %w", ErrUntrustedRoot, err)
	case strings.HasPrefix(msg, "failed to verify signature"):
		what := "the artifact"
		if b.GetDsseEnvelope() != nil {
			what = "the statement"
		}
		why := "modified after signing"
		if o.PublicKey != nil {
			why += ", or signed by another key"
		}
		return fmt.Errorf("%w: %s does not match the signature (%s): %w", ErrSignatureMismatch, what, why, err)
	case strings.HasPrefix(msg, "failed to verify certificate identity"):
		return identityError(b, o, err)
	case strings.HasPrefix(msg, "failed to fetch envelope statement"):
		return fmt.Errorf("%w: DSSE payload is not an in-toto statement: %w", ErrMalformedBundle, err)
	}
	return fmt.Errorf("verification failed: %w", err)
}

// identityError says which identity criterion failed, expected vs found.
func identityError(b *bundle.Bundle, o VerifyOptions, err error) error {
	sum, serr := certSummary(b)
	if serr != nil {
		return fmt.Errorf("%w: %w", ErrIdentityMismatch, err)
	}
	san, iss := sum.SubjectAlternativeName, sum.Issuer
	switch {
	case o.CertIdentity != "" && san != o.CertIdentity:
		return fmt.Errorf("%w: expected SAN %q, certificate has %q", ErrIdentityMismatch, o.CertIdentity, san)
	case o.CertIdentityRegexp != "" && !matches(o.CertIdentityRegexp, san):
		return fmt.Errorf("%w: expected SAN matching %q, certificate has %q", ErrIdentityMismatch, o.CertIdentityRegexp, san)
	case o.CertOIDCIssuer != "" && iss != o.CertOIDCIssuer:
		return fmt.Errorf("%w: expected issuer %q, certificate has %q (SAN %q)", ErrIssuerMismatch, o.CertOIDCIssuer, iss, san)
	case o.CertOIDCIssuerRegexp != "" && !matches(o.CertOIDCIssuerRegexp, iss):
		return fmt.Errorf("%w: expected issuer matching %q, certificate has %q (SAN %q)", ErrIssuerMismatch, o.CertOIDCIssuerRegexp, iss, san)
	}
	return fmt.Errorf("%w: %w", ErrIdentityMismatch, err)
}

func matches(expr, s string) bool {
	re, err := regexp.Compile(expr)
	return err == nil && re.MatchString(s)
}

// certSummary reads the (unverified) leaf certificate of a bundle, for
// error messages only.
func certSummary(b *bundle.Bundle) (certificate.Summary, error) {
	vc, err := b.VerificationContent()
	if err != nil {
		return certificate.Summary{}, err
	}
	c := vc.Certificate()
	if c == nil {
		return certificate.Summary{}, fmt.Errorf("no certificate")
	}
	return certificate.SummarizeCertificate(c)
}

func describeCert(b *bundle.Bundle) string {
	sum, err := certSummary(b)
	if err != nil {
		return "unreadable certificate"
	}
	return fmt.Sprintf("SAN %q, issuer %q", sum.SubjectAlternativeName, sum.Issuer)
}
