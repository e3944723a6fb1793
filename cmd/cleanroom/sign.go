package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/cleanroom-ci/cleanroom/runner"
	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
	"github.com/cleanroom-ci/cleanroom/sign"
)

// signOptions are the run flags that choose how outputs are signed.
type signOptions struct {
	key           string
	keyless       bool
	identityToken string
	fulcioURL     string
	rekorURL      string
	tsaURL        string
	trustedRoot   string
	skipTlog      bool
}

func (o *signOptions) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.key, "sign-key", "", "sign artifacts and provenance with this key (cosign.key, encrypted with $COSIGN_PASSWORD, or a PEM ECDSA/Ed25519 key)")
	f.BoolVar(&o.keyless, "keyless", false, "sign keyless: a Fulcio certificate for the CI's OIDC identity, logged in Rekor (also: pipeline sign: {keyless: true})")
	f.StringVar(&o.identityToken, "identity-token", "", "file holding the OIDC token for --keyless (default: $SIGSTORE_ID_TOKEN, then GitHub Actions' token endpoint)")
	f.StringVar(&o.fulcioURL, "fulcio-url", "", "Fulcio for --keyless (default: the public Sigstore instance)")
	f.StringVar(&o.rekorURL, "rekor-url", "", "Rekor v2 transparency log for --keyless (default: the public Sigstore instance)")
	f.StringVar(&o.tsaURL, "tsa-url", "", "RFC 3161 timestamp authority endpoint for --keyless (default: the public Sigstore instance)")
	f.StringVar(&o.trustedRoot, "trusted-root", "", "trusted_root.json: every bundle is verified against it before the run reports success")
	f.BoolVar(&o.skipTlog, "skip-tlog", false, "keyless without a transparency-log entry (private deployments without Rekor; cosign then needs --insecure-ignore-tlog)")
}

// signer builds the signer a run asked for, or nil (sign.New: keyless
// tokens are fetched and checked before any step runs).
func (o *signOptions) signer(ctx context.Context, p *pipeline.Pipeline, log hclog.Logger) (runner.Signer, error) {
	keyless := o.keyless || p.Sign.Keyless
	cfg := sign.Config{Mode: sign.ModeNone, Log: log.Info}
	switch {
	case o.key != "" && keyless:
		return nil, errors.New("--sign-key and --keyless (or sign.keyless in the pipeline) exclude each other")
	case o.key != "":
		cfg.Mode, cfg.Key, cfg.Password = sign.ModeKey, o.key, []byte(os.Getenv("COSIGN_PASSWORD"))
	case keyless:
		cfg.Mode, cfg.IdentityTokenFile, cfg.SkipTlog = sign.ModeKeyless, o.identityToken, o.skipTlog
		cfg.FulcioURL, cfg.RekorURL, cfg.TSAURL, cfg.TrustedRoot = o.fulcioURL, o.rekorURL, o.tsaURL, o.trustedRoot
	}
	s, err := sign.New(ctx, cfg)
	var ce *sign.ConfigError
	if errors.As(err, &ce) {
		flag := map[string]string{"key": "--sign-key", "identity_token": "--keyless", "trusted_root": "--trusted-root"}[ce.Field]
		return nil, fmt.Errorf("%s: %w", flag, ce.Err)
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// keyInWorkspace returns a message when the signing key file lies inside
// the workspace: every step can read the workspace, so a build (or a
// dependency it runs) can copy the key out, and an encrypted cosign.key
// can then be attacked offline. "" when the key is elsewhere.
func keyInWorkspace(key, workspace string) string {
	if key == "" {
		return ""
	}
	abs, err := filepath.Abs(key)
	if err != nil {
		return ""
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	ws := workspace
	if real, err := filepath.EvalSymlinks(ws); err == nil {
		ws = real
	}
	rel, err := filepath.Rel(ws, abs)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return ""
	}
	return fmt.Sprintf("--sign-key %s lies inside the workspace %s, which every step can read: a step could copy the key out; keep the key outside the workspace", key, workspace)
}

func newKeygenCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "keygen",
		Short: "Write a signing key pair (cosign.key, cosign.pub) to the current directory",
		Long: `Keygen writes cosign.key (the private key, encrypted with the password in
$COSIGN_PASSWORD) and cosign.pub in the current directory, in the same format
as "cosign generate-key-pair": either tool can use the keys of the other.
It refuses to overwrite existing files.`,
		Example: `  COSIGN_PASSWORD=… cleanroom keygen
  cleanroom run --sign-key cosign.key
  cleanroom verify out/app --key cosign.pub --provenance-bundle .cleanroom/provenance.sigstore.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pw, ok := os.LookupEnv("COSIGN_PASSWORD")
			if !ok {
				return systemFailure(errors.New("set COSIGN_PASSWORD to the password that encrypts cosign.key (it may be empty)"))
			}
			priv, pub, err := sign.GenerateKeyPair(".", []byte(pw))
			if err != nil {
				return systemFailure(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Private key written to %s\nPublic key written to %s\n", priv, pub)
			return nil
		},
	}
}
