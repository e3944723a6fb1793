package pipeline

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Error is one problem found in a pipeline file. Every problem carries the
// place it was found so that editors and CI logs can jump straight to it.
type Error struct {
	// File is the path given to Load, or the name given to Parse.
	File string
	// Line and Column are 1-based and point at the offending text: the
	// value for a bad value, the key for an unknown or misplaced field, the
	// enclosing mapping for a missing field.
	Line, Column int
	// Field is the path of the field, e.g. "steps[1].timeout",
	// "egress.allow[0]" or "steps[0].env.FOO". Indices are 0-based. Empty
	// for problems with the file as a whole (for example a YAML syntax error).
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

// ErrorList is every problem found in a pipeline file, in file order. Parse
// and Load collect all the problems they can rather than stopping at the
// first, so that one edit-run cycle fixes them all.
type ErrorList []*Error

// Error returns one problem per line.
func (l ErrorList) Error() string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find the individual *Error values.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// sorted returns the list in file order without duplicates. Checks that
// span several fields run after the field-by-field pass, so their errors
// would otherwise come last; file order is what a reader expects.
func (l ErrorList) sorted() ErrorList {
	out := slices.Clone(l)
	slices.SortStableFunc(out, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	return slices.CompactFunc(out, func(a, b *Error) bool { return *a == *b })
}
