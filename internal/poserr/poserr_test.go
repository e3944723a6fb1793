package poserr

import (
	"errors"
	"fmt"
	"testing"
)

func TestFormatAndAs(t *testing.T) {
	e := &Error{File: "cleanroom.yaml", Line: 3, Column: 5, Field: "steps[0].timeout", Msg: "not a duration"}
	if got := e.Error(); got != "cleanroom.yaml:3:5: steps[0].timeout: not a duration" {
		t.Fatal(got)
	}
	whole := &Error{File: "a.yaml", Line: 1, Column: 1, Msg: "empty"}
	if got := whole.Error(); got != "a.yaml:1:1: empty" {
		t.Fatal(got)
	}
	var pe *Error
	if !errors.As(fmt.Errorf("load: %w", e), &pe) || pe.Line != 3 {
		t.Fatal("errors.As lost the position")
	}
}
