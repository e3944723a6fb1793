// Package sigstore holds the end-to-end tests of package sign against real
// Sigstore services and the real cosign v2 CLI, fully offline:
//
//   - a local OIDC issuer (httptest + go-jose) minting GitLab-shaped tokens;
//   - Fulcio v1.8.8 in-process (ephemeral CA, issuer type gitlab-pipeline);
//   - timestamp-authority v2.1.3 in-process (memory signer);
//   - Rekor v2 (rekor-tiles v2.3.0, POSIX backend) as a loopback subprocess;
//   - cosign v2.6.5 as a subprocess, for interop.
//
// It is a separate module so that Fulcio's and the TSA's server
// dependencies stay out of the cleanroom module graph (fulcio's own test
// files import a module the proxy does not serve, which breaks `go mod
// tidy`). The rekor-server and cosign binaries are built with
// `go install <module>@<version>` into a cache directory and reused; see
// toolbin_test.go. Run with ./run.sh.
package sigstore
