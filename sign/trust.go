package sign

import (
	"fmt"
	"os"

	"github.com/sigstore/sigstore-go/pkg/root"
)

// LoadTrustedRoot reads a Sigstore trusted_root.json (the format cosign's
// --trusted-root takes): the Fulcio CAs, Rekor logs, CT logs and TSAs a
// verifier trusts. It is read from a file the operator controls, never
// fetched: the runner must not trust whatever a network answers.
func LoadTrustedRoot(path string) (*root.TrustedRoot, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading trusted root: %w", err)
	}
	tr, err := root.NewTrustedRootFromJSON(data)
	if err != nil {
		return nil, fmt.Errorf("trusted root %s: %w", path, err)
	}
	return tr, nil
}
