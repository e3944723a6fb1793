// Package poserr is the one positioned error of cleanroom's configuration
// files: pipelines (runner/pipeline), the GitLab driver's policy and the
// agent's configuration (internal/yamlconf) all report a problem as
// FILE:LINE:COL: FIELD: MSG, so that editors and CI logs jump straight to
// it and tools can read the fields with errors.As whichever file it was.
package poserr

import "fmt"

// Error is one problem at one place in a file.
type Error struct {
	// File is the path given to the loader (or the name given to a parser).
	File string
	// Line and Column are 1-based and point at the offending text: the
	// value for a bad value, the key for an unknown or misplaced field, the
	// enclosing mapping for a missing field.
	Line, Column int
	// Field is the path of the field, e.g. "steps[1].timeout",
	// "egress.allow[0]" or "signing.key". Indices are 0-based. Empty for
	// problems with the file as a whole (for example a YAML syntax error).
	Field string
	// Msg says what is wrong and what is accepted.
	Msg string
}

// Error formats the problem as "FILE:LINE:COL: FIELD: MSG".
func (e *Error) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Column, e.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s: %s", e.File, e.Line, e.Column, e.Field, e.Msg)
}
