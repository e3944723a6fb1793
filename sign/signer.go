package sign

import "context"

// Signer turns bytes into Sigstore bundle JSON. Implementations are safe
// for concurrent use.
type Signer interface {
	// SignBlob signs data as an opaque artifact (a message signature over
	// its digest) and returns the bundle JSON.
	SignBlob(ctx context.Context, data []byte) ([]byte, error)
	// SignDSSE signs payload inside a DSSE envelope of the given payload
	// type (InTotoPayloadType for provenance) and returns the bundle JSON.
	// The type is covered by the signature (DSSE PAE), so a statement cannot
	// be replayed as another kind of document.
	SignDSSE(ctx context.Context, payloadType string, payload []byte) ([]byte, error)
	// Identity names the signer for logs: "key:<sha256 hex of the public
	// key>" for a key, the certificate SAN for keyless (after the first
	// signature; before that, "keyless:<fulcio URL>").
	Identity() string
}

const (
	// InTotoPayloadType is the DSSE payload type of an in-toto statement.
	InTotoPayloadType = "application/vnd.in-toto+json"
	// BundleMediaType is the media type of the bundles this package writes.
	BundleMediaType = "application/vnd.dev.sigstore.bundle.v0.3+json"
	// BundleSuffix is appended to an artifact's name for its bundle file.
	BundleSuffix = ".sigstore.json"
)

// Endpoints of the public Sigstore instance ("public good"), used when
// KeylessOptions leaves a URL empty.
const (
	PublicFulcioURL = "https://fulcio.sigstore.dev"
	// PublicRekorV1URL is the original Rekor log.
	PublicRekorV1URL = "https://rekor.sigstore.dev"
	// PublicRekorV2URL is the 2025 Rekor v2 shard named by the public
	// signing config at the time of writing. Shards rotate; a long-lived
	// deployment should take the current one from the signing config.
	PublicRekorV2URL = "https://log2025-1.rekor.sigstore.dev"
	// PublicTSAURL is the full timestamp endpoint (RFC 3161 over HTTP).
	PublicTSAURL = "https://timestamp.sigstore.dev/api/v1/timestamp"
)

// EmptyTrustedRootJSON is a trusted root that trusts nothing. cosign v2
// refuses to verify a protobuf bundle without a trusted root, even when a
// key is given; pass this file as --trusted-root for key-based bundles that
// carry no timestamp, so cosign does not go looking for the public one.
const EmptyTrustedRootJSON = `{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}` + "\n"
