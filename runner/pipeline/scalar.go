package pipeline

import (
	"errors"
	"regexp"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/token"
)

// This file reads scalars with strict types. YAML's own typing is loose
// ("on" and "yes" were booleans in YAML 1.1, 0 vs "0"), so types are
// resolved here under the YAML 1.2 core schema and anything that is not
// exactly the expected type is an error with a hint.

type scalarKind int

const (
	kindString scalarKind = iota
	kindNull
	kindBool
	kindInt
	kindFloat
)

// scalar is a YAML scalar with its type resolved under the YAML 1.2 core
// schema: quoted and block scalars are strings; plain scalars are null,
// booleans, numbers or strings by their spelling.
type scalar struct {
	text string
	kind scalarKind
	node ast.Node
}

// describe names the value in a "got ..." clause.
func (s scalar) describe() string {
	switch s.kind {
	case kindNull:
		return "nothing (an empty or null value)"
	case kindBool:
		return "the boolean " + s.text
	case kindInt, kindFloat:
		return "the number " + s.text
	}
	return "the string " + strconv.Quote(s.text)
}

var (
	coreIntRE   = regexp.MustCompile(`^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$`)
	coreFloatRE = regexp.MustCompile(`^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$`)
)

// plainKind types an unquoted scalar by its spelling (YAML 1.2 core schema).
func plainKind(text string) scalarKind {
	switch {
	case text == "" || text == "~" || text == "null" || text == "Null" || text == "NULL":
		return kindNull
	case text == "true" || text == "True" || text == "TRUE" || text == "false" || text == "False" || text == "FALSE":
		return kindBool
	case coreIntRE.MatchString(text):
		return kindInt
	case coreFloatRE.MatchString(text):
		return kindFloat
	}
	return kindString
}

// scalar reads a scalar; want describes the expected value for the error
// when n is a list or mapping instead.
func (d *decoder) scalar(n ast.Node, field, want string) (scalar, bool) {
	n, ok := d.resolve(n, field)
	if !ok {
		return scalar{}, false
	}
	d.mark(n, field)
	switch v := n.(type) {
	case nil:
		return scalar{kind: kindNull, node: n}, true
	case *ast.StringNode:
		tk := v.GetToken()
		if tk != nil && (tk.Type == token.SingleQuoteType || tk.Type == token.DoubleQuoteType) {
			return scalar{text: v.Value, kind: kindString, node: n}, true
		}
		return scalar{text: v.Value, kind: plainKind(v.Value), node: n}, true
	case *ast.LiteralNode:
		text := ""
		if v.Value != nil {
			text = v.Value.Value
		}
		return scalar{text: text, kind: kindString, node: n}, true
	case *ast.NullNode:
		return scalar{kind: kindNull, node: n}, true
	case *ast.BoolNode:
		return scalar{text: tokenText(v), kind: kindBool, node: n}, true
	case *ast.IntegerNode:
		return scalar{text: tokenText(v), kind: kindInt, node: n}, true
	case *ast.FloatNode, *ast.InfinityNode, *ast.NanNode:
		return scalar{text: tokenText(v), kind: kindFloat, node: n}, true
	case *ast.TagNode:
		tag := tokenText(v)
		if tag != "!!str" && tag != "tag:yaml.org,2002:str" {
			d.errorf(v, field, "YAML tag %s is not supported; remove it (only !!str, to force a string, is accepted)", tag)
			return scalar{}, false
		}
		inner, ok := d.resolve(v.Value, field)
		if !ok {
			return scalar{}, false
		}
		switch iv := inner.(type) {
		case nil:
			return scalar{kind: kindString, node: n}, true
		case *ast.NullNode:
			// "!!str" alone is the empty string; "!!str null" is "null".
			if tk := iv.GetToken(); tk == nil || tk.Type == token.ImplicitNullType {
				return scalar{kind: kindString, node: n}, true
			}
			return scalar{text: tokenText(iv), kind: kindString, node: n}, true
		case *ast.LiteralNode:
			if iv.Value != nil {
				return scalar{text: iv.Value.Value, kind: kindString, node: n}, true
			}
			return scalar{kind: kindString, node: n}, true
		case *ast.StringNode:
			return scalar{text: iv.Value, kind: kindString, node: n}, true
		case ast.ScalarNode:
			return scalar{text: tokenText(iv), kind: kindString, node: n}, true
		}
		n = inner
	}
	d.errorf(n, field, "expected %s, got %s", want, describeNode(n))
	return scalar{}, false
}

func tokenText(n ast.Node) string {
	if tk := n.GetToken(); tk != nil {
		return tk.Value
	}
	return ""
}

// describeNode names a non-scalar node in a "got ..." clause.
func describeNode(n ast.Node) string {
	switch n.(type) {
	case *ast.MappingNode, *ast.MappingValueNode:
		return "a mapping"
	case *ast.SequenceNode:
		return "a list"
	}
	return "a " + strings.ToLower(n.Type().String()) + " node"
}

// str reads a string. Numbers, booleans and null are refused with a hint
// to quote them: YAML would read `0` as a number and `on` as a string, and
// what a step sees should be exactly what was written.
func (d *decoder) str(n ast.Node, field string) (string, ast.Node, bool) {
	s, ok := d.scalar(n, field, "a string")
	if !ok {
		return "", nil, false
	}
	switch s.kind {
	case kindString:
		return s.text, s.node, true
	case kindNull:
		d.errorf(s.node, field, "expected a string, got %s", s.describe())
	default:
		d.errorf(s.node, field, "expected a string, got %s; quote it if you mean the string: %s", s.describe(), strconv.Quote(s.text))
	}
	return "", nil, false
}

// integer reads an integer (decimal, 0x, 0o or 0b; '_' separators allowed).
func (d *decoder) integer(n ast.Node, field string) (int64, ast.Node, bool) {
	s, ok := d.scalar(n, field, "an integer")
	if !ok {
		return 0, nil, false
	}
	if s.kind != kindInt {
		d.errorf(s.node, field, "expected an integer, got %s", s.describe())
		return 0, nil, false
	}
	base := 0
	if coreIntRE.MatchString(s.text) && !strings.HasPrefix(s.text, "0x") && !strings.HasPrefix(s.text, "0o") {
		base = 10 // YAML 1.2: a leading 0 is not octal
	}
	v, err := strconv.ParseInt(s.text, base, 64)
	if err != nil {
		d.errorf(s.node, field, "integer %s is out of range", s.text)
		return 0, nil, false
	}
	return v, s.node, true
}

// number reads an integer or a decimal number.
func (d *decoder) number(n ast.Node, field string) (float64, ast.Node, bool) {
	s, ok := d.scalar(n, field, "a number")
	if !ok {
		return 0, nil, false
	}
	if s.kind == kindInt {
		if v, _, ok := d.integer(s.node, field); ok {
			return float64(v), s.node, true
		}
		return 0, nil, false
	}
	if s.kind != kindFloat {
		d.errorf(s.node, field, "expected a number, got %s", s.describe())
		return 0, nil, false
	}
	text := strings.ToLower(strings.ReplaceAll(s.text, "_", ""))
	switch strings.TrimLeft(text, "+") { // YAML spells these with a dot
	case ".inf":
		text = "inf"
	case "-.inf":
		text = "-inf"
	case ".nan":
		text = "nan"
	}
	v, err := strconv.ParseFloat(text, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) { // out of range is ±Inf, refused by the caller's bounds
		d.errorf(s.node, field, "invalid number %s", s.text)
		return 0, nil, false
	}
	return v, s.node, true
}

// boolean reads true or false.
func (d *decoder) boolean(n ast.Node, field string) (bool, bool) {
	s, ok := d.scalar(n, field, "true or false")
	if !ok {
		return false, false
	}
	if s.kind != kindBool {
		d.errorf(s.node, field, "expected true or false, got %s", s.describe())
		return false, false
	}
	return strings.EqualFold(s.text, "true"), true
}
