package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cleanroom-ci/cleanroom/internal/exitcode"
	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
)

type lintOptions struct {
	file         string
	output       string
	strict       bool
	disable      []string
	userContent  string
	release      bool
	egressMode   string
	allow        []string
	lintSettings bool
}

func (o *lintOptions) addFlags(cmd *cobra.Command, standalone bool) {
	f := cmd.Flags()
	f.BoolVar(&o.strict, "strict", false, "treat lint warnings as errors")
	f.StringArrayVar(&o.disable, "lint-disable", nil, "disable a lint rule by id or name, e.g. CR007 or no-timeout (repeatable)")
	f.StringVar(&o.userContent, "user-content-hosts", "", "file with one host pattern per line that replaces the built-in list of user-content hosts (rule CR004)")
	f.BoolVar(&o.release, "release", false, "the pipeline produces a release: audit egress mode is a finding even without artifacts")
	if standalone {
		f.StringVarP(&o.file, "file", "f", "cleanroom.yaml", "pipeline file")
		f.StringVarP(&o.output, "output", "o", "text", "text, json or sarif")
		f.StringVar(&o.egressMode, "egress-mode", "", "lint as if run with this --egress-mode")
		f.StringArrayVar(&o.allow, "allow", nil, "lint as if run with this --allow (repeatable)")
	}
}

func (o *lintOptions) lintOpts() (pipeline.LintOptions, error) {
	lo := pipeline.LintOptions{Disabled: o.disable, Release: o.release, EgressMode: o.egressMode, ExtraAllow: o.allow}
	if err := pipeline.CheckRuleIDs(o.disable); err != nil {
		return lo, fmt.Errorf("--lint-disable: %w", err)
	}
	if o.userContent != "" {
		f, err := os.Open(o.userContent)
		if err != nil {
			return lo, fmt.Errorf("--user-content-hosts: %w", err)
		}
		defer f.Close()
		lo.UserContentHosts = []string{}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line != "" && !strings.HasPrefix(line, "#") {
				lo.UserContentHosts = append(lo.UserContentHosts, line)
			}
		}
	}
	return lo, nil
}

func newLintCommand(g *globalOptions) *cobra.Command {
	o := &lintOptions{}
	cmd := &cobra.Command{
		Use:   "lint [-f cleanroom.yaml]",
		Short: "Check a pipeline file for errors and insecure set-ups, without running it",
		Long: `Lint parses and validates a pipeline file exactly as run does (unknown fields,
wrong types, invalid durations, sizes, image references and egress rules are
errors, reported as FILE:LINE:COLUMN: FIELD: message), then warns about set-ups
that work but are insecure: unpinned images, broad egress, user-content hosts,
curl | sh, secrets in the file, missing timeouts, audit mode in a release,
internal addresses, disabled TLS verification, plain-HTTP fetches. Every
warning has an id, the fix, and a section in docs/lint.md. The same warnings
are printed when a run starts.

Exit codes: 0 no errors (warnings allowed unless --strict), 1 warnings with
--strict, 2 the file is invalid. It needs no daemon and no root.`,
		Example: `  cleanroom lint
  cleanroom lint -f ci/cleanroom.yaml --strict
  cleanroom lint --output sarif > cleanroom.sarif   # for code-scanning UIs`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runLint(cmd.OutOrStdout(), o)
		},
	}
	o.addFlags(cmd, true)
	return cmd
}

func runLint(w io.Writer, o *lintOptions) error {
	lo, err := o.lintOpts()
	if err != nil {
		return systemFailure(err)
	}
	p, perr := pipeline.Load(o.file, pipeline.WithRuleCheck(checkRule))
	if perr == nil {
		// A missing archive fails the run before any step: the file is
		// not runnable as it stands.
		perr = pipeline.CheckArchives(p, nil)
	}
	var findings []pipeline.Finding
	if perr == nil {
		findings = pipeline.Lint(p, lo)
	}
	switch o.output {
	case "text":
		if perr != nil {
			return systemFailure(perr)
		}
		for _, f := range findings {
			fmt.Fprintln(w, "warning:", f)
		}
		fmt.Fprintf(w, "%s: valid, %d warning(s)\n", o.file, len(findings))
	case "json":
		writeLintJSON(w, o.file, perr, findings)
	case "sarif":
		code := exitcode.OK
		switch {
		case perr != nil:
			code = exitcode.SystemFailure
		case o.strict && len(findings) > 0:
			code = exitcode.BuildFailure
		}
		if err := writeSARIF(w, o.file, perr, findings, code); err != nil {
			return systemFailure(err)
		}
	default:
		return systemFailure(fmt.Errorf("--output %q: use text, json or sarif", o.output))
	}
	if perr != nil {
		return systemFailure(nil)
	}
	if o.strict && len(findings) > 0 {
		return buildFailure(fmt.Errorf("%d lint warning(s) with --strict", len(findings)))
	}
	return nil
}

func writeLintJSON(w io.Writer, file string, perr error, findings []pipeline.Finding) {
	type problem struct {
		File    string `json:"file"`
		Line    int    `json:"line"`
		Column  int    `json:"column"`
		Field   string `json:"field"`
		Message string `json:"message"`
	}
	problems := []problem{}
	var list pipeline.ErrorList
	if errors.As(perr, &list) {
		for _, e := range list {
			problems = append(problems, problem{e.File, e.Line, e.Column, e.Field, e.Msg})
		}
	} else if perr != nil {
		problems = append(problems, problem{File: file, Message: perr.Error()})
	}
	if findings == nil {
		findings = []pipeline.Finding{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(map[string]any{"file": file, "valid": perr == nil, "errors": problems, "warnings": findings})
}

// docsURL is where the rules are documented, absolute as SARIF's helpUri
// must be.
const docsURL = "https://github.com/cleanroom-ci/cleanroom/blob/main/docs/lint.md#"

// sarifErrorRule is the SARIF rule of a pipeline file that does not parse
// or validate: the problems are reported as results, so that a code-scanning
// UI shows them where they are instead of rejecting the upload.
const sarifErrorRule = "invalid-pipeline"

// writeSARIF writes findings, or the problems that made the file invalid,
// as SARIF 2.1.0, the format code-scanning UIs import. exitCode is the exit
// code lint returns, recorded in the invocation.
func writeSARIF(w io.Writer, file string, perr error, findings []pipeline.Finding, exitCode int) error {
	type msg struct {
		Text string `json:"text"`
	}
	rules := []map[string]any{{
		"id": sarifErrorRule, "name": "InvalidPipeline",
		"shortDescription":     msg{"the pipeline file does not parse or validate; cleanroom run refuses it"},
		"help":                 msg{"Fix: correct the field named in the message (FILE:LINE:COLUMN: FIELD: message)"},
		"helpUri":              "https://github.com/cleanroom-ci/cleanroom/blob/main/README.md",
		"defaultConfiguration": map[string]string{"level": "error"},
	}}
	for _, r := range pipeline.Rules() {
		rules = append(rules, map[string]any{
			"id": r.ID, "name": r.Name,
			"shortDescription":     msg{r.Summary},
			"help":                 msg{"Fix: " + r.Fix},
			"helpUri":              docsURL + strings.ToLower(r.ID),
			"defaultConfiguration": map[string]string{"level": "warning"},
		})
	}
	location := func(file string, line, col int) []any {
		// A problem with the file as a whole (it cannot be read) points at
		// its first line.
		region := map[string]int{"startLine": max(line, 1)}
		if col > 0 {
			region["startColumn"] = col
		}
		pl := map[string]any{"artifactLocation": map[string]string{"uri": sarifURI(file)}, "region": region}
		return []any{map[string]any{"physicalLocation": pl}}
	}
	results := []map[string]any{}
	var list pipeline.ErrorList
	switch {
	case errors.As(perr, &list):
		for _, e := range list {
			m := e.Msg
			if e.Field != "" {
				m = e.Field + ": " + m
			}
			results = append(results, map[string]any{"ruleId": sarifErrorRule, "ruleIndex": 0, "level": "error",
				"message": msg{m}, "locations": location(e.File, e.Line, e.Column)})
		}
	case perr != nil:
		results = append(results, map[string]any{"ruleId": sarifErrorRule, "ruleIndex": 0, "level": "error",
			"message": msg{perr.Error()}, "locations": location(file, 0, 0)})
	}
	index := map[string]int{}
	for i, r := range rules {
		index[r["id"].(string)] = i
	}
	for _, f := range findings {
		results = append(results, map[string]any{
			"ruleId": f.ID, "ruleIndex": index[f.ID], "level": "warning",
			"message":   msg{f.Message + ". Fix: " + f.Fix},
			"locations": location(f.File, f.Line, f.Column),
		})
	}
	invocation := map[string]any{"executionSuccessful": perr == nil, "exitCode": exitCode}
	if perr != nil {
		invocation["toolExecutionNotifications"] = []any{map[string]any{"level": "error", "message": msg{"the pipeline file is invalid; its problems are the results with ruleId " + sarifErrorRule}}}
	}
	doc := map[string]any{
		"version": "2.1.0",
		"$schema": "https://json.schemastore.org/sarif-2.1.0.json",
		"runs": []any{map[string]any{
			"tool": map[string]any{"driver": map[string]any{"name": "cleanroom", "version": sarifVersion(version),
				"informationUri": "https://github.com/cleanroom-ci/cleanroom", "rules": rules}},
			"invocations": []any{invocation},
			"results":     results,
		}},
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

// sarifURI makes a file path a URI reference as SARIF wants it: a relative
// path with forward slashes, or a file: URI for an absolute path (a
// relative reference starting with "/" would not combine with a uriBaseId).
func sarifURI(path string) string {
	if filepath.IsAbs(path) {
		return (&url.URL{Scheme: "file", Path: filepath.ToSlash(path)}).String()
	}
	return (&url.URL{Path: filepath.ToSlash(path)}).String()
}

// sarifVersion starts the version with a number, as SARIF consumers compare
// versions: a development build ("dev", a commit) becomes 0.0.0-<it>.
func sarifVersion(v string) string {
	if v != "" && v[0] >= '0' && v[0] <= '9' {
		return v
	}
	return "0.0.0-" + v
}
