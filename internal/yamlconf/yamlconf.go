// Package yamlconf decodes the operator's configuration files (the GitLab
// driver's policy, the agent's configuration) strictly, and reports every
// problem at FILE:LINE:COL with the field it concerns: a misspelt or
// misplaced protection must stop the program with its place named, never
// silently become no protection.
package yamlconf

import (
	"errors"
	"fmt"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/cleanroom-ci/cleanroom/internal/poserr"
)

// Error is one problem in a configuration file, at FILE:LINE:COL: the
// same type as a pipeline's (internal/poserr).
type Error = poserr.Error

// Decoder decodes one file and collects the semantic problems found while
// resolving it, each at its place.
type Decoder struct {
	File string
	ast  *ast.File
	errs []error
}

// Decode parses data strictly (unknown keys are errors) into v. It
// returns the number of YAML documents; none (an empty file) leaves v as
// it is.
func (d *Decoder) Decode(data []byte, v any) (int, error) {
	file, err := parser.ParseBytes(data, 0)
	if err != nil {
		return 0, d.yamlError(err)
	}
	d.ast = file
	n := 0
	for _, doc := range file.Docs {
		if doc.Body != nil {
			n++
		}
	}
	if n == 0 {
		return 0, nil
	}
	if n > 1 {
		return n, &Error{File: d.File, Line: 1, Column: 1, Msg: "the file is one YAML document; remove the second (after ---)"}
	}
	for _, doc := range file.Docs {
		if doc.Body != nil {
			if err := yaml.NodeToValue(doc.Body, v, yaml.Strict()); err != nil {
				return n, d.yamlError(err)
			}
		}
	}
	return n, nil
}

// yamlError turns a go-yaml error into FILE:LINE:COL: message, without
// the multi-line source excerpt go-yaml adds.
func (d *Decoder) yamlError(err error) error {
	var ye yaml.Error
	if errors.As(err, &ye) {
		line, col := 1, 1
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			line, col = max(tk.Position.Line, 1), max(tk.Position.Column, 1)
		}
		return &Error{File: d.File, Line: line, Column: col, Msg: ye.GetMessage()}
	}
	msg, _, _ := strings.Cut(err.Error(), "\n")
	return &Error{File: d.File, Line: 1, Column: 1, Msg: msg}
}

// Errorf records a problem with field at the YAML path ("$.a.b[1]"); the
// place is the node's, or 1:1 when the path is not in the file (a
// missing key).
func (d *Decoder) Errorf(path, field, format string, args ...any) {
	line, col := 1, 1
	if p, err := yaml.PathString(path); err == nil && d.ast != nil {
		if n, err := p.FilterFile(d.ast); err == nil && n != nil {
			if tk := n.GetToken(); tk != nil && tk.Position != nil {
				line, col = max(tk.Position.Line, 1), max(tk.Position.Column, 1)
			}
		}
	}
	d.errs = append(d.errs, &Error{File: d.File, Line: line, Column: col, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// Err returns every problem recorded, joined, or nil.
func (d *Decoder) Err() error { return errors.Join(d.errs...) }
