package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	intoto "github.com/in-toto/attestation/go/v1"

	"github.com/spf13/cobra"

	"github.com/cleanroom-ci/cleanroom/runner/manifest"
	"github.com/cleanroom-ci/cleanroom/sign"
)

type verifyOptions struct {
	provenance       string
	provenanceBundle string
	policy           string
	output           string
	trust            sign.VerifyOptions
	key              string
	trustedRoot      string
}

func newVerifyCommand() *cobra.Command {
	o := &verifyOptions{}
	cmd := &cobra.Command{
		Use:   "verify ARTIFACT... (--provenance FILE | --provenance-bundle FILE --key PUB | --provenance-bundle FILE --certificate-identity ID --certificate-oidc-issuer URL)",
		Short: "Check a signed provenance, the artifacts against it, and an optional policy",
		Long: `Verify checks, in order: the signature of the provenance bundle
(provenance.sigstore.json) — with --key for key-signed runs, or for keyless runs
the certificate chain to a trusted Fulcio, the identity (--certificate-identity
or -regexp) and OIDC issuer (--certificate-oidc-issuer or -regexp), the
transparency-log entry and timestamps per --trusted-root —; then that each
artifact's sha256 is a subject of the statement; then the policy. It prints
what went into the build: builder,
source, images, dependencies fetched (and how many without a content digest),
denied egress.

A policy file (YAML) can require more; any failure exits non-zero:

  builderId: https://ci.example.org/cleanroom@v1   # exact builder id
  sourceRepo: https://git.example.org/team/app      # source remote
  noDeniedEgress: true                              # no request was denied
  allDependenciesDigested: true                     # every fetch has a sha256
  imagesPinned: true                                # images by digest (or archives)
  noUndeclaredFetches: true                         # every fetch declared in go.sum / package-lock.json
  noHashMismatches: true                            # and with the declared hash
  freshWorkspace: true                              # built in a fresh copy, not --reuse-workspace`,
		Example: `  cleanroom verify out/app --provenance-bundle .cleanroom/provenance.sigstore.json --key cosign.pub
  cleanroom verify out/app --provenance-bundle provenance.sigstore.json --trusted-root trusted_root.json \
      --certificate-identity 'https://gitlab.com/group/project//.gitlab-ci.yml@refs/heads/main' \
      --certificate-oidc-issuer https://gitlab.com
  cleanroom verify out/app --provenance .cleanroom/provenance.intoto.json --policy release-policy.yaml --output json`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, sig, err := o.statement()
			if err != nil {
				return buildFailure(err)
			}
			var pol manifest.Policy
			if o.policy != "" {
				if pol, err = manifest.LoadPolicy(o.policy); err != nil {
					return systemFailure(err)
				}
			}
			report, verr := manifest.Verify(st, args, pol)
			switch o.output {
			case "json":
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				enc.Encode(map[string]any{"verified": verr == nil, "signature": sig, "report": report})
			case "text":
				if sig != nil {
					fmt.Fprintf(cmd.OutOrStdout(), "signature:     verified, signed by %s", sig.Identity)
					if sig.Issuer != "" {
						fmt.Fprintf(cmd.OutOrStdout(), " (issuer %s)", sig.Issuer)
					}
					fmt.Fprintf(cmd.OutOrStdout(), ", transparency log: %v, timestamps: %d\n", sig.TlogVerified, len(sig.Timestamps))
				} else {
					fmt.Fprintln(cmd.OutOrStdout(), "signature:     not checked (--provenance given, not --provenance-bundle)")
				}
				fmt.Fprint(cmd.OutOrStdout(), report.Text())
			default:
				return systemFailure(fmt.Errorf("--output %q: use text or json", o.output))
			}
			if verr != nil {
				return buildFailure(fmt.Errorf("verification failed: %w", verr))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&o.provenance, "provenance", "", "unsigned provenance statement (provenance.intoto.json): checks artifacts and policy only")
	cmd.Flags().StringVar(&o.provenanceBundle, "provenance-bundle", "", "signed provenance (provenance.sigstore.json): checks the signature first")
	cmd.Flags().StringVar(&o.key, "key", "", "public key (cosign.pub) of a key-signed run")
	cmd.Flags().StringVar(&o.trustedRoot, "trusted-root", "", "Sigstore trusted_root.json (Fulcio, Rekor, TSA) for keyless bundles")
	cmd.Flags().StringVar(&o.trust.CertIdentity, "certificate-identity", "", "expected certificate identity (SAN) of a keyless signature")
	cmd.Flags().StringVar(&o.trust.CertIdentityRegexp, "certificate-identity-regexp", "", "regexp for the certificate identity")
	cmd.Flags().StringVar(&o.trust.CertOIDCIssuer, "certificate-oidc-issuer", "", "expected OIDC issuer of a keyless signature")
	cmd.Flags().StringVar(&o.trust.CertOIDCIssuerRegexp, "certificate-oidc-issuer-regexp", "", "regexp for the OIDC issuer")
	cmd.Flags().BoolVar(&o.trust.RequireTlog, "require-tlog", false, "require a verified transparency-log entry")
	cmd.Flags().StringVar(&o.policy, "policy", "", "policy file (YAML) with further requirements")
	cmd.Flags().StringVarP(&o.output, "output", "o", "text", "text or json")
	return cmd
}

// statement returns the statement to check: from a signed bundle (after
// verifying its signature) or, unsigned, from --provenance.
func (o *verifyOptions) statement() (*intoto.Statement, *sign.Result, error) {
	switch {
	case o.provenanceBundle != "" && o.provenance != "":
		return nil, nil, errors.New("give --provenance or --provenance-bundle, not both")
	case o.provenance != "":
		st, err := manifest.ReadFile(o.provenance)
		return st, nil, err
	case o.provenanceBundle == "":
		return nil, nil, errors.New("--provenance-bundle FILE (signed) or --provenance FILE (unsigned) is required")
	}
	if o.key != "" {
		pub, err := sign.LoadPublicKey(o.key)
		if err != nil {
			return nil, nil, fmt.Errorf("--key: %w", err)
		}
		o.trust.PublicKey = pub
	}
	if o.trustedRoot != "" {
		tr, err := sign.LoadTrustedRoot(o.trustedRoot)
		if err != nil {
			return nil, nil, fmt.Errorf("--trusted-root: %w", err)
		}
		o.trust.TrustedRoot = tr
	}
	if o.trust.PublicKey == nil && o.trust.TrustedRoot == nil {
		return nil, nil, errors.New("--provenance-bundle needs --key (key-signed) or --trusted-root with --certificate-identity and --certificate-oidc-issuer (keyless)")
	}
	b, err := os.ReadFile(o.provenanceBundle)
	if err != nil {
		return nil, nil, err
	}
	payload, res, err := sign.VerifyAttestation(b, o.trust)
	if err != nil {
		return nil, nil, fmt.Errorf("provenance signature: %w", err)
	}
	st, err := manifest.Unmarshal(payload)
	if err != nil {
		return nil, nil, fmt.Errorf("signed provenance: %w", err)
	}
	return st, res, nil
}
