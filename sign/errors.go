package sign

import "errors"

// Sentinel errors. Every error returned by this package that falls in one
// of these classes wraps the sentinel (test with errors.Is); the message
// carries the specifics (expected vs found identity, which check failed).
var (
	// ErrMalformedBundle: the bundle is not valid Sigstore bundle JSON, or
	// not the kind expected (blob signature vs DSSE attestation).
	ErrMalformedBundle = errors.New("malformed bundle")
	// ErrSignatureMismatch: the signature does not cover these bytes — the
	// artifact or statement was modified, or another key signed it.
	ErrSignatureMismatch = errors.New("signature mismatch")
	// ErrIdentityMismatch: the certificate SAN is not the expected identity.
	ErrIdentityMismatch = errors.New("certificate identity mismatch")
	// ErrIssuerMismatch: the certificate's OIDC issuer is not the expected one.
	ErrIssuerMismatch = errors.New("certificate OIDC issuer mismatch")
	// ErrUntrustedRoot: the certificate does not chain to a trusted Fulcio
	// root (or lacks a trusted SCT), or the bundle's verification material
	// does not fit the trust given (key vs certificate).
	ErrUntrustedRoot = errors.New("untrusted signer")
	// ErrTimestamp: a required timestamp is missing, or not signed by a
	// trusted timestamp authority.
	ErrTimestamp = errors.New("missing or untrusted timestamp")
	// ErrTlog: a required transparency-log entry is missing or does not
	// verify against a trusted log.
	ErrTlog = errors.New("missing or invalid transparency log entry")

	// ErrWrongPassword: an encrypted private key did not decrypt.
	ErrWrongPassword = errors.New("wrong password for encrypted private key")
	// ErrUnsupportedKey: a key of a type this package does not sign with.
	ErrUnsupportedKey = errors.New("unsupported key")
	// ErrKeyExists: GenerateKeyPair would overwrite a file.
	ErrKeyExists = errors.New("key file already exists")

	// ErrTokenMalformed: the identity token is not a parseable JWT.
	ErrTokenMalformed = errors.New("malformed identity token")
	// ErrTokenExpired: the identity token's exp is in the past.
	ErrTokenExpired = errors.New("identity token expired")
	// ErrTokenNotYetValid: the identity token's nbf is in the future.
	ErrTokenNotYetValid = errors.New("identity token not yet valid")
	// ErrTokenClaims: a claim Fulcio needs (iss, sub, aud, exp) is missing.
	ErrTokenClaims = errors.New("identity token lacks required claims")
	// ErrNoToken: the token source has nothing to offer.
	ErrNoToken = errors.New("no identity token")
)
