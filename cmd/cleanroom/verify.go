package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	intoto "github.com/in-toto/attestation/go/v1"

	"github.com/spf13/cobra"

	"github.com/cleanroom-ci/cleanroom/internal/exitcode"
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
		Use:   "verify ARTIFACT... [flags]",
		Short: "Check a signed provenance, the artifacts against it, and an optional policy",
		Long: `Verify checks, in order:
  1. the signature of the provenance bundle (provenance.sigstore.json): with
     --key for key-signed runs; for keyless runs the certificate chain to a
     trusted Fulcio, the identity (--certificate-identity or -regexp), the
     OIDC issuer (--certificate-oidc-issuer or -regexp), the transparency-log
     entry and the timestamps, per --trusted-root;
  2. that each artifact's sha256 is a subject of the statement;
  3. the policy (--policy), each check of which is listed when it passes.
It prints what went into the build: builder, source, images, every
dependency fetched (URL and sha256), denied egress.

Forms:
  cleanroom verify ARTIFACT... --provenance-bundle FILE --key PUB
  cleanroom verify ARTIFACT... --provenance-bundle FILE --trusted-root FILE \
      --certificate-identity ID --certificate-oidc-issuer URL
  cleanroom verify ARTIFACT... --provenance FILE   # unsigned: no signature

A policy file (YAML) can require more:

  builderId: https://ci.example.org/cleanroom@v1   # exact builder id
  sourceRepo: https://git.example.org/team/app      # source remote
  noDeniedEgress: true                              # no request was denied
  allDependenciesDigested: true                     # every fetch has a sha256
  imagesPinned: true                                # images by digest (or archives)
  noUndeclaredFetches: true                         # every fetch declared in go.sum / package-lock.json
  noHashMismatches: true                            # and with the declared hash
  freshWorkspace: true                              # built in a fresh copy, not --reuse-workspace

Exit codes: 0 verified; 1 verification failed (signature, artifact or
policy); 2 the check could not be made (a missing or unreadable file, bad
flags). --output json prints one object on stdout for every outcome:
status (verified, failed, error), exitCode, error, signature and report.`,
		Example: `  cleanroom verify out/app --provenance-bundle .cleanroom/provenance.sigstore.json --key cosign.pub
  cleanroom verify out/app --provenance-bundle provenance.sigstore.json --trusted-root trusted_root.json \
      --certificate-identity 'https://gitlab.com/group/project//.gitlab-ci.yml@refs/heads/main' \
      --certificate-oidc-issuer https://gitlab.com
  cleanroom verify out/app --provenance .cleanroom/provenance.intoto.json --policy release-policy.yaml --output json`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.output != "text" && o.output != "json" {
				return systemFailure(fmt.Errorf("--output %q: use text or json", o.output))
			}
			sig, report, err := o.verify(args)
			if o.output == "json" {
				printVerifyJSON(cmd.OutOrStdout(), sig, report, err)
				return err
			}
			if report != nil {
				printVerifyText(cmd.OutOrStdout(), sig, report)
			}
			return err
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

// verify runs the checks. The error is an *exitError: a build failure (1)
// when a check failed, a system failure (2) when a check could not be
// made. A failed policy or artifact check comes with the report that lists
// it, and its error does not repeat the list.
func (o *verifyOptions) verify(artifacts []string) (*sign.Result, *manifest.Report, error) {
	var pol manifest.Policy
	if o.policy != "" {
		var err error
		if pol, err = manifest.LoadPolicy(o.policy); err != nil {
			return nil, nil, systemFailure(err)
		}
	}
	st, sig, err := o.statement()
	if err != nil {
		return nil, nil, err
	}
	report, verr := manifest.Verify(st, artifacts, pol)
	if verr != nil && len(report.Failures) == 0 {
		// Not provenance of ours at all: there is no report to show.
		return sig, nil, buildFailure(fmt.Errorf("verification failed: %w", verr))
	}
	if verr != nil {
		return sig, &report, buildFailure(fmt.Errorf("verification failed: %d check(s) failed", len(report.Failures)))
	}
	return sig, &report, nil
}

// verifyJSON is the one object --output json prints, whatever the outcome.
type verifyJSON struct {
	// Status is verified, failed (exit 1) or error (exit 2).
	Status    string           `json:"status"`
	ExitCode  int              `json:"exitCode"`
	Verified  bool             `json:"verified"`
	Error     string           `json:"error,omitempty"`
	Signature *sign.Result     `json:"signature"`
	Report    *manifest.Report `json:"report"`
}

func printVerifyJSON(w io.Writer, sig *sign.Result, report *manifest.Report, err error) {
	out := verifyJSON{Status: "verified", Verified: err == nil, Signature: sig, Report: report}
	if err != nil {
		out.Status, out.ExitCode, out.Error = "failed", exitcode.BuildFailure, err.Error()
		var ee *exitError
		if errors.As(err, &ee) && ee.code == exitcode.SystemFailure {
			out.Status, out.ExitCode = "error", exitcode.SystemFailure
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(out)
}

func printVerifyText(w io.Writer, sig *sign.Result, report *manifest.Report) {
	if sig != nil {
		fmt.Fprintf(w, "signature:     verified, signed by %s", sig.Identity)
		if sig.Issuer != "" {
			fmt.Fprintf(w, " (issuer %s)", sig.Issuer)
		}
		fmt.Fprintf(w, ", transparency log: %v, timestamps: %d\n", sig.TlogVerified, len(sig.Timestamps))
	} else {
		fmt.Fprintln(w, "signature:     not checked (--provenance given, not --provenance-bundle)")
	}
	fmt.Fprint(w, report.Text())
}

// statement returns the statement to check: from a signed bundle (after
// verifying its signature) or, unsigned, from --provenance.
func (o *verifyOptions) statement() (*intoto.Statement, *sign.Result, error) {
	switch {
	case o.provenanceBundle != "" && o.provenance != "":
		return nil, nil, systemFailure(errors.New("give --provenance or --provenance-bundle, not both"))
	case o.provenance != "":
		st, err := manifest.ReadFile(o.provenance)
		if err != nil {
			return nil, nil, readFailure("--provenance", err)
		}
		return st, nil, nil
	case o.provenanceBundle == "":
		return nil, nil, systemFailure(errors.New("--provenance-bundle FILE (signed) or --provenance FILE (unsigned) is required"))
	}
	if o.key != "" {
		pub, err := sign.LoadPublicKey(o.key)
		if err != nil {
			return nil, nil, systemFailure(fmt.Errorf("--key: %w", err))
		}
		o.trust.PublicKey = pub
	}
	if o.trustedRoot != "" {
		tr, err := sign.LoadTrustedRoot(o.trustedRoot)
		if err != nil {
			return nil, nil, systemFailure(fmt.Errorf("--trusted-root: %w", err))
		}
		o.trust.TrustedRoot = tr
	}
	if o.trust.PublicKey == nil && o.trust.TrustedRoot == nil {
		return nil, nil, systemFailure(errors.New("--provenance-bundle needs --key (key-signed) or --trusted-root with --certificate-identity and --certificate-oidc-issuer (keyless)"))
	}
	b, err := os.ReadFile(o.provenanceBundle)
	if err != nil {
		return nil, nil, systemFailure(fmt.Errorf("--provenance-bundle: %w", err))
	}
	payload, res, err := sign.VerifyAttestation(b, o.trust)
	if err != nil {
		return nil, nil, buildFailure(fmt.Errorf("verification failed: provenance signature: %w", err))
	}
	st, err := manifest.Unmarshal(payload)
	if err != nil {
		return nil, nil, buildFailure(fmt.Errorf("verification failed: signed provenance: %w", err))
	}
	return st, res, nil
}

// readFailure classifies a provenance file that could not be used: one
// that cannot be read (missing, a directory, no permission) means the
// check could not be made (exit 2); one that reads but is not a statement
// fails verification (exit 1).
func readFailure(flag string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return systemFailure(fmt.Errorf("%s: %w", flag, pe))
	}
	return buildFailure(fmt.Errorf("verification failed: %s: %w", flag, err))
}
