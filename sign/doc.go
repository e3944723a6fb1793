// Package sign produces and checks Sigstore bundles (bundle v0.3 JSON,
// "<name>.sigstore.json") for bytes handed to it by the runner.
//
// The runner signs, never the build step: at the end of a successful run it
// calls SignBlob for each artifact and SignDSSE for the in-toto provenance
// statement (payload type InTotoPayloadType). The package knows nothing
// about pipelines; it signs bytes.
//
// Two kinds of Signer exist:
//
//   - NewKeySigner: a long-lived key (cosign.key format, or plain PEM
//     ECDSA/Ed25519). Works offline; optionally adds an RFC 3161 timestamp.
//   - NewKeylessSigner: an ephemeral key certified by Fulcio for the CI
//     job's OIDC identity, timestamped by a TSA and logged in Rekor (v2 by
//     default). The identity token is read through a TokenSource; CheckToken
//     lets the runner refuse to start a build whose token is unusable.
//
// Bundles are meant to be verified by the real cosign v2 CLI as well as by
// VerifyBlob / VerifyAttestation here. The Go implementation is sigstore-go
// (the library cosign itself delegates bundle signing to), not cosign's CLI
// packages, which are not a stable API and pull ~230 modules.
//
// cosign v2 interop (tested with cosign v2.6.5 in integration/sigstore):
// cosign v2 needs a trusted root for any protobuf bundle, even a key-based
// one, and without --trusted-root would fetch the public-good root over the
// network. Key-based bundles without a timestamp:
//
//	cosign verify-blob --key cosign.pub --bundle A.sigstore.json \
//	    --trusted-root empty_root.json --insecure-ignore-tlog=true A
//	cosign verify-blob-attestation --key cosign.pub \
//	    --bundle provenance.sigstore.json --type slsaprovenance1 \
//	    --trusted-root empty_root.json --insecure-ignore-tlog=true A
//
// where empty_root.json holds EmptyTrustedRootJSON and A is an artifact
// named in the statement (cosign checks the subject digest). With a TSA
// (KeyOptions.TSAURL): a trusted root listing the TSA, plus
// --use-signed-timestamps. P-384 keys need --signature-digest-algorithm
// sha384 (cosign assumes SHA-256); P-256 and Ed25519 need nothing more.
//
// Keyless bundles: --trusted-root with the deployment's root,
// --certificate-identity/--certificate-oidc-issuer (or the -regexp forms),
// and --use-signed-timestamps, since a Rekor v2 entry has no integrated
// time; with a Fulcio that has no CT log, also --insecure-ignore-sct=true.
// cosign then verifies the Rekor v2 inclusion proof itself.
//
// Secrets: tokens and private keys never appear in errors, logs or files
// written by this package, except the encrypted key GenerateKeyPair writes.
package sign
