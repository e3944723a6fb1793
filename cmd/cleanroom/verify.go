package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cleanroom-ci/cleanroom/runner/manifest"
)

type verifyOptions struct {
	provenance string
	policy     string
	output     string
}

func newVerifyCommand() *cobra.Command {
	o := &verifyOptions{}
	cmd := &cobra.Command{
		Use:   "verify ARTIFACT... --provenance FILE",
		Short: "Check artifacts against a run's provenance and an optional policy",
		Long: `Verify checks that each artifact's sha256 is a subject of the provenance
statement (provenance.intoto.json) and prints what went into the build: builder,
source, images, dependencies fetched (and how many without a content digest),
denied egress.

A policy file (YAML) can require more; any failure exits non-zero:

  builderId: https://ci.example.org/cleanroom@v1   # exact builder id
  sourceRepo: https://git.example.org/team/app      # source remote
  noDeniedEgress: true                              # no request was denied
  allDependenciesDigested: true                     # every fetch has a sha256
  imagesPinned: true                                # images by digest (or archives)`,
		Example: `  cleanroom verify out/app --provenance .cleanroom/provenance.intoto.json
  cleanroom verify out/app --provenance p.json --policy release-policy.yaml --output json`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.provenance == "" {
				return systemFailure(errors.New("--provenance FILE is required"))
			}
			st, err := manifest.ReadFile(o.provenance)
			if err != nil {
				return systemFailure(err)
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
				enc.Encode(map[string]any{"verified": verr == nil, "report": report})
			case "text":
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
	cmd.Flags().StringVar(&o.provenance, "provenance", "", "provenance statement (provenance.intoto.json)")
	cmd.Flags().StringVar(&o.policy, "policy", "", "policy file (YAML) with further requirements")
	cmd.Flags().StringVarP(&o.output, "output", "o", "text", "text or json")
	return cmd
}
