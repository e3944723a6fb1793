package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cleanroom-ci/cleanroom/agent/auth"
)

// newAgentTokenCommand is `cleanroom agent token`: it edits the tokens file
// that a running agent follows, so changes need no restart.
func newAgentTokenCommand() *cobra.Command {
	var tokensFile string
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke the agent's API tokens",
		Long: `The agent's HTTP API and web page accept only bearer tokens from the tokens
file (default ` + auth.DefaultTokensFile + `). Each token has a name and a scope:

  read    job status, logs, artifact downloads and the web page
  submit  read, plus submitting jobs and cancelling the token's own jobs
  admin   everything, including cancelling any job

The file keeps only a SHA-256 hash of each token: the token itself is shown
once, by "token create", and cannot be recovered; a lost token is revoked
and replaced. A running agent re-reads the file within about a second, so
create and revoke take effect without a restart. Removing the file revokes
every token.

Clients send the token as "Authorization: Bearer <token>"; the web page
takes it as the cleanroom_token cookie.`,
	}
	cmd.PersistentFlags().StringVar(&tokensFile, "tokens-file", auth.DefaultTokensFile, "the agent's tokens file")
	cmd.AddCommand(newAgentTokenCreateCommand(&tokensFile), newAgentTokenListCommand(&tokensFile), newAgentTokenRevokeCommand(&tokensFile))
	return cmd
}

func newAgentTokenCreateCommand(tokensFile *string) *cobra.Command {
	var name, scope, output string
	cmd := &cobra.Command{
		Use:   "create --name NAME --scope read|submit|admin",
		Short: "Create a token and print it, once",
		Long: `Create a token and print it on standard output. This is the only time it is
shown: only its hash is stored. In text output the token is alone on the
first line of standard output and the notice goes to standard error, so
$(...) captures just the token.

NAME is 1 to 64 of a-z 0-9 . _ -, starting with a letter or digit (but
not "tok_", which marks ids), unique in the file; it names the token in
"token list" and in the agent's logs. The scope decides what the token may
do:

  read    job status, logs, artifact downloads and the web page
  submit  read, plus submitting jobs and cancelling the token's own jobs
  admin   everything, including cancelling any job`,
		Example: `  # A token for a CI system that submits jobs and follows them:
  cleanroom agent token create --name ci-bot --scope submit

  # A read-only token for a dashboard, straight into a file only you can read:
  (umask 077; cleanroom agent token create --name dashboard --scope read > dashboard.token)

  # For scripts: JSON with id, name, scope and the token itself.
  cleanroom agent token create --name deploy --scope admin --output json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				return systemFailure(errors.New("--name is required"))
			}
			sc, err := auth.ParseScope(scope)
			if err != nil {
				return systemFailure(fmt.Errorf("--scope: %w", err))
			}
			if output != "text" && output != "json" {
				return systemFailure(fmt.Errorf("--output %q: use text or json", output))
			}
			secret, tok, err := auth.Create(*tokensFile, name, sc)
			if err != nil {
				return systemFailure(tokensFileError(*tokensFile, err))
			}
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(struct {
					ID    string     `json:"id"`
					Name  string     `json:"name"`
					Scope auth.Scope `json:"scope"`
					Token string     `json:"token"`
				}{tok.ID, tok.Name, tok.Scope, secret})
			}
			fmt.Fprintln(cmd.OutOrStdout(), secret)
			fmt.Fprintf(cmd.ErrOrStderr(), "Created token %q (id %s, scope %s). It is shown this once: %s keeps only its hash, so store it now.\n",
				tok.Name, tok.ID, tok.Scope, *tokensFile)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "the token's name (required)")
	cmd.Flags().StringVar(&scope, "scope", "", "read, submit or admin (required)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}

func newAgentTokenListCommand(tokensFile *string) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the tokens (never the tokens themselves, nor their hashes)",
		Example: `  cleanroom agent token list
  cleanroom agent token list --output json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return systemFailure(fmt.Errorf("--output %q: use text or json", output))
			}
			toks, err := auth.List(*tokensFile)
			if err != nil {
				return systemFailure(tokensFileError(*tokensFile, err))
			}
			type row struct {
				ID      string     `json:"id"`
				Name    string     `json:"name"`
				Scope   auth.Scope `json:"scope"`
				Created time.Time  `json:"created"`
			}
			rows := make([]row, 0, len(toks))
			for _, t := range toks {
				rows = append(rows, row{t.ID, t.Name, t.Scope, t.Created})
			}
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			if len(rows) == 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "No tokens in %s: the agent refuses every request. Create one with \"cleanroom agent token create --name NAME --scope SCOPE\".\n", *tokensFile)
				return nil
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tSCOPE\tCREATED")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.ID, r.Name, r.Scope, r.Created.Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}

func newAgentTokenRevokeCommand(tokensFile *string) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID|NAME",
		Short: "Revoke a token; a running agent refuses it within about a second",
		Example: `  cleanroom agent token revoke ci-bot
  cleanroom agent token revoke tok_3f9a1c0b2e7d`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := auth.Revoke(*tokensFile, args[0]); err != nil {
				return systemFailure(tokensFileError(*tokensFile, err))
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "Revoked %s.\n", args[0])
			return nil
		},
	}
}

// tokensFileError adds the way out to the common case of running as a user
// who cannot write the default file.
func tokensFileError(path string, err error) error {
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("%w (run as root, or pass --tokens-file)", err)
	}
	return err
}
