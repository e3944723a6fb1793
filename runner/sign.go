package runner

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Signer is what the runner needs from the sign package: the runner signs,
// never a step, so the key or OIDC token stays in the runner's process.
type Signer interface {
	SignBlob(ctx context.Context, data []byte) ([]byte, error)
	SignDSSE(ctx context.Context, payloadType string, payload []byte) ([]byte, error)
	Identity() string
}

// InTotoPayloadType is the DSSE payload type of in-toto statements.
const InTotoPayloadType = "application/vnd.in-toto+json"

// BundleSuffix is appended to a signed file's name for its Sigstore bundle.
const BundleSuffix = ".sigstore.json"

// signOutputs signs each artifact as a blob and the provenance statement as
// a DSSE attestation, writing the bundles into the staging directory (they
// are published with the other outputs). Each artifact is re-hashed first:
// what is signed is exactly what the provenance names.
func signOutputs(ctx context.Context, cfg Config, res *Result, stage string) error {
	start := time.Now()
	for _, s := range res.Subjects {
		data, err := os.ReadFile(filepath.Join(cfg.ws.Dir, filepath.FromSlash(s.Name)))
		if err != nil {
			return fmt.Errorf("read artifact %s: %w", s.Name, err)
		}
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != s.SHA256 {
			return fmt.Errorf("artifact %s changed after it was hashed; refusing to sign it", s.Name)
		}
		bundle, err := cfg.Signer.SignBlob(ctx, data)
		if err != nil {
			return fmt.Errorf("sign %s: %w", s.Name, err)
		}
		dst := filepath.Join(stage, filepath.FromSlash(s.Name)+BundleSuffix)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, bundle, 0o644); err != nil {
			return err
		}
		res.Bundles = append(res.Bundles, filepath.Join(cfg.OutDir, filepath.FromSlash(s.Name)+BundleSuffix))
	}
	statement, err := os.ReadFile(filepath.Join(stage, ProvenanceFile))
	if err != nil {
		return err
	}
	bundle, err := cfg.Signer.SignDSSE(ctx, InTotoPayloadType, bytes.TrimSpace(statement))
	if err != nil {
		return fmt.Errorf("sign provenance: %w", err)
	}
	name := "provenance" + BundleSuffix
	if err := os.WriteFile(filepath.Join(stage, name), bundle, 0o644); err != nil {
		return err
	}
	res.Bundles = append(res.Bundles, filepath.Join(cfg.OutDir, name))
	res.SignedBy = cfg.Signer.Identity()
	cfg.trace("sign", start, time.Now(), "artifacts", len(res.Subjects))
	cfg.Logger.Info("signed", "identity", res.SignedBy, "bundles", len(res.Bundles))
	return nil
}
