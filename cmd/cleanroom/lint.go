package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
)

func newLintCommand(g *globalOptions) *cobra.Command {
	var file, output string
	cmd := &cobra.Command{
		Use:   "lint [-f cleanroom.yaml]",
		Short: "Check a pipeline file without running it",
		Long: `Lint parses and validates a pipeline file exactly as run does: unknown fields,
wrong types, invalid durations, sizes, image references and egress rules are
reported as FILE:LINE:COLUMN: FIELD: message. It needs no daemon and no root.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := pipeline.Load(file, pipeline.WithRuleCheck(checkRule))
			if output == "json" {
				type problem struct {
					File    string `json:"file"`
					Line    int    `json:"line"`
					Column  int    `json:"column"`
					Field   string `json:"field"`
					Message string `json:"message"`
				}
				problems := []problem{}
				if list, ok := err.(pipeline.ErrorList); ok {
					for _, e := range list {
						problems = append(problems, problem{e.File, e.Line, e.Column, e.Field, e.Msg})
					}
				} else if err != nil {
					problems = append(problems, problem{File: file, Message: err.Error()})
				}
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				enc.Encode(map[string]any{"file": file, "valid": err == nil, "problems": problems})
				if err != nil {
					return systemFailure(nil)
				}
				return nil
			}
			if err != nil {
				return systemFailure(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", file)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "cleanroom.yaml", "pipeline file")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}
