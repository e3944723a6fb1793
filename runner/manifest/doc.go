// Package manifest turns what a cleanroom run did into a signed-ready
// provenance statement, and checks artifacts against such a statement.
//
// The statement is an in-toto Statement v1 whose predicate is SLSA
// Provenance v1 (https://slsa.dev/provenance/v1) with buildType BuildType.
// It is built from a plain Input so that this package depends on no other
// cleanroom package: the runner converts its own records into an Input, and
// the same Input always yields the same bytes from Marshal. That property is
// what makes two runs comparable with a byte diff and lets the golden test
// pin the format.
//
// The package also owns the hashing the statement relies on (HashFile,
// TreeDigest), the selection of artifacts by glob (MatchArtifacts, which
// refuses anything that resolves outside the workspace), and verification of
// artifacts and policy against a recorded statement (Verify, LoadPolicy).
//
// The field-by-field meaning of the predicate is documented in
// docs/buildtype.md.
package manifest
