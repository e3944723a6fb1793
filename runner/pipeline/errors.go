package pipeline

import (
	"cmp"
	"slices"
	"strings"

	"github.com/cleanroom-ci/cleanroom/internal/poserr"
)

// Error is one problem found in a pipeline file, formatted
// "FILE:LINE:COL: FIELD: MSG". Every problem carries the place it was
// found so that editors and CI logs can jump straight to it; it is the
// same type as the policy's and the agent config's (internal/poserr).
// Field is e.g. "steps[1].timeout", "egress.allow[0]" or
// "steps[0].env.FOO".
type Error = poserr.Error

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
