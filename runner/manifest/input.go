package manifest

import "time"

// Identifiers written into every statement. They are URIs so that a verifier
// can recognise the format without knowing cleanroom.
const (
	// BuildType names the schema of externalParameters, internalParameters
	// and the dependency annotations; docs/buildtype.md describes it. Any
	// incompatible change to that schema must change this URI.
	BuildType = "https://cleanroom.dev/buildtypes/pipeline/v1"

	// DefaultBuilderID is used when Input.BuilderID is empty. It names an
	// unmanaged, local runner: a policy that trusts only a hosted builder
	// will reject statements carrying it, which is the point.
	DefaultBuilderID = "https://cleanroom.dev/builder/local@v1"

	// StatementType is the in-toto statement type written to "_type".
	StatementType = "https://in-toto.io/Statement/v1"

	// PredicateType is the SLSA provenance predicate type.
	PredicateType = "https://slsa.dev/provenance/v1"

	// TreeFormat names the listing that TreeDigest hashes; it is recorded
	// next to the workspace digest so the digest can be recomputed by others.
	TreeFormat = "https://cleanroom.dev/tree/v1"
)

// Input is everything the runner knows about one run, in plain values.
// Build validates it and maps it onto the provenance predicate; see
// docs/buildtype.md for where each field lands.
type Input struct {
	// BuilderID identifies the trust boundary that ran the build
	// (runDetails.builder.id). Empty means DefaultBuilderID.
	BuilderID string
	// InvocationID identifies this run: a UUID (see NewInvocationID) or a CI
	// job URL. Required.
	InvocationID string
	// StartedOn and FinishedOn bound the run. Both are required.
	StartedOn, FinishedOn time.Time
	// RunnerVersion is the cleanroom version that ran the build. Required.
	RunnerVersion string

	// Pipeline is the pipeline definition that was run.
	Pipeline File
	// Steps are the selected steps, in execution order.
	Steps []string
	// Flags are the command-line flags that change what is built, by name
	// without dashes ("allow", "step", "egress-mode"), values in the order
	// given. Only flags that affect the result belong here, and never one
	// carrying a secret.
	Flags map[string][]string
	// Source is where the workspace came from.
	Source Source

	// Images are the sandbox images each step ran in.
	Images []Image
	// Dependencies are the fetches the egress proxy recorded.
	Dependencies []Dependency
	// Denied are the connections the egress proxy refused.
	Denied []Denied

	// Sandbox describes the isolation (backend, versions, limits, …). It is
	// passed through as JSON; it must be JSON-able and hold no secrets, and
	// every number in it must be exactly representable as a float64.
	Sandbox map[string]any
	// Egress is the effective allowlist per step.
	Egress map[string][]string

	// Subjects are the artifacts the run produced; see MatchArtifacts.
	Subjects []Subject
	// Byproducts are files the run wrote that are not artifacts: the egress
	// log, build logs, the summary.
	Byproducts []Byproduct

	// FailedStep names the step that failed, or is empty for a successful
	// run. A failed run has no subjects.
	FailedStep string
	// Environment lists the names (never the values) of the non-secret
	// variables the pipeline set.
	Environment []string
	// Internal holds further internalParameters recorded by runner
	// features (e.g. "lockfileCheck", "materials"; see lockfile.go). It
	// must be JSON-able; its keys must not collide with the ones above.
	Internal map[string]any
}

// File is a file identified by path and content digest.
type File struct {
	// Path is relative to the workspace (slash-separated) when the file is
	// inside it, absolute otherwise.
	Path string
	// SHA256 is the lowercase hex digest of the content.
	SHA256 string
}

// Source describes the workspace. With git, Remote/Commit/Ref say which
// revision was checked out; TreeSHA256 (TreeDigest of the workspace) says
// what was actually built, which differs from the commit when the tree is
// dirty. At least one of Commit and TreeSHA256 is required.
type Source struct {
	Remote     string // e.g. https://github.com/org/repo; credentials are removed
	Commit     string // 40 lowercase hex characters
	Ref        string // e.g. refs/heads/main
	TreeSHA256 string // TreeDigest of the workspace
}

// Image is the image one step, or one service beside a step, ran in.
type Image struct {
	Step string
	// Service is the alias of the service that ran the image beside Step;
	// empty for the step's own image.
	Service string
	Ref     string // as written in the pipeline, e.g. golang:1.26 or x@sha256:…
	Digest  string // resolved manifest digest, hex or "sha256:hex"
}

// Dependency is one fetch recorded by the egress proxy.
type Dependency struct {
	Step string
	// URL is the fetched URL, or "host:port" for an opaque (CONNECT) tunnel
	// whose content the proxy could not see.
	URL string
	// SHA256 is the lowercase hex digest of the response body, empty when
	// unknown (tunnels, aborted transfers).
	SHA256            string
	Size              int64 // body size in bytes
	BytesIn, BytesOut int64 // bytes on the wire, received and sent
	Method            string
	// Module and Version identify the package when the proxy recognised the
	// protocol (e.g. the Go module proxy).
	Module, Version string
}

// Denied is an egress attempt the proxy refused, aggregated per step,
// host, port and reason.
type Denied struct {
	Step   string
	Host   string
	Port   int
	Reason string
	Count  int // at least 1
}

// Subject is an artifact: a workspace-relative slash path and its digest.
type Subject struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}

// Byproduct is a file the run wrote besides its artifacts.
type Byproduct struct {
	Name   string
	SHA256 string
	Size   int64
}
