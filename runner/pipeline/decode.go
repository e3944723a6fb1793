package pipeline

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/lexer"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// This file turns YAML into typed values with positions. It walks the
// go-yaml AST by hand instead of unmarshalling into structs because struct
// decoding stops at the first error, loses the position of values it
// accepted (needed for later semantic errors), and follows YAML's loose
// typing ("0" vs 0, yes/no) that a build configuration should not.

// maxNodes bounds how many nodes decoding visits. A file within
// MaxFileSize has far fewer; only aliases and merge keys can multiply the
// count (the "billion laughs" attack), and those are cut off here.
const maxNodes = 1 << 22

// maxErrors bounds the report: past it, the rest are likely consequences
// of the same mistake, and a broken generated file should not produce
// megabytes of messages.
const maxErrors = 100

type decoder struct {
	file      string
	opts      options
	errs      ErrorList
	truncated bool                        // errors were dropped past maxErrors
	aliases   map[*ast.AliasNode]ast.Node // alias -> anchored node it names
	budget    int                         // nodes left to visit; see maxNodes
}

// errorf records a problem at n's position.
func (d *decoder) errorf(n ast.Node, field, format string, args ...any) {
	if len(d.errs) >= maxErrors {
		d.truncated = true
		return
	}
	line, col := position(n)
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Column: col, Field: field, Msg: oneLine(fmt.Sprintf(format, args...))})
}

// oneLine keeps a message on one line (ErrorList prints one error per
// line) even when it quotes text that is not quoted already.
func oneLine(s string) string {
	return strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(s)
}

// spend takes k nodes from the budget and reports false, after one error,
// once it is spent.
func (d *decoder) spend(k int, n ast.Node, field string) bool {
	if d.budget <= 0 {
		return false
	}
	d.budget -= k
	if d.budget <= 0 {
		d.errorf(n, field, "the file expands to more than %d values through aliases and merge keys; use fewer aliases", maxNodes)
		return false
	}
	return true
}

// position returns where n starts, 1-based. Block mappings report their
// first key rather than go-yaml's token (the first ':'), because that is
// where a reader sees the mapping begin.
func position(n ast.Node) (line, col int) {
	switch v := n.(type) {
	case nil:
		return 1, 1
	case *ast.DocumentNode:
		return position(v.Body)
	case *ast.MappingNode:
		if !v.IsFlowStyle && len(v.Values) > 0 {
			return position(v.Values[0])
		}
	case *ast.MappingValueNode:
		return position(v.Key)
	case *ast.MappingKeyNode:
		if v.Value != nil {
			return position(v.Value)
		}
	case *ast.AnchorNode:
		if v.Value != nil {
			return position(v.Value)
		}
	}
	tk := n.GetToken()
	if tk == nil || tk.Position == nil || tk.Position.Line < 1 {
		return 1, 1
	}
	return tk.Position.Line, max(tk.Position.Column, 1)
}

// parseYAML parses data and returns the single document's root node (nil
// for an empty document). go-yaml is third-party code fed untrusted input;
// a panic in it is reported as an error rather than crashing the runner.
func (d *decoder) parseYAML(data []byte) (root ast.Node, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			d.errs = append(d.errs, &Error{File: d.file, Line: 1, Column: 1,
				Msg: oneLine(fmt.Sprintf("cannot parse the file as YAML (parser failure: %v)", r))})
			root, ok = nil, false
		}
	}()
	// A UTF-8 byte order mark is allowed by YAML but not by go-yaml.
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	tokens := lexer.Tokenize(string(data))
	if tk, msg := checkShape(tokens); tk != nil {
		line, col := tk.Position.Line, max(tk.Position.Column, 1)
		d.errs = append(d.errs, &Error{File: d.file, Line: max(line, 1), Column: col,
			Msg: msg + "; a pipeline file this large or deep is not supported"})
		return nil, false
	}
	f, err := parser.Parse(tokens, 0)
	if err != nil {
		d.syntaxError(err)
		return nil, false
	}
	var docs []*ast.DocumentNode
	for _, doc := range f.Docs {
		if doc != nil && doc.Body != nil && doc.Body.Type() != ast.CommentType {
			docs = append(docs, doc)
		}
	}
	if len(docs) == 0 {
		return nil, true
	}
	if len(docs) > 1 {
		d.errorf(docs[1].Body, "", "a pipeline file holds one YAML document; remove the second one (after ---)")
		return nil, false
	}
	d.aliases = map[*ast.AliasNode]ast.Node{}
	collectAnchors(docs[0].Body, map[string]ast.Node{}, d.aliases)
	return docs[0].Body, true
}

// syntaxError converts a go-yaml parse error. Its own message embeds a
// source excerpt over several lines; only the one-line message is kept.
func (d *decoder) syntaxError(err error) {
	line, col, msg := 1, 1, err.Error()
	var se *yaml.SyntaxError
	if errors.As(err, &se) {
		msg = se.Message
		if se.Token != nil && se.Token.Position != nil && se.Token.Position.Line > 0 {
			line, col = se.Token.Position.Line, max(se.Token.Position.Column, 1)
		}
	} else if first, _, _ := strings.Cut(msg, "\n"); first != "" {
		msg = first
	}
	if strings.Contains(msg, "\t") {
		msg = strings.ReplaceAll(msg, "\t", `\t`) + " (indent YAML with spaces, not tabs)"
	}
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Column: col, Msg: "invalid YAML: " + oneLine(msg)})
}

// collectAnchors records, in document order, which anchored node each
// alias names. An anchor is registered after its own content is walked, so
// an alias inside its own anchor stays unresolved instead of making a cycle.
func collectAnchors(n ast.Node, anchors map[string]ast.Node, aliases map[*ast.AliasNode]ast.Node) {
	switch v := n.(type) {
	case *ast.MappingNode:
		for _, mv := range v.Values {
			collectAnchors(mv, anchors, aliases)
		}
	case *ast.MappingValueNode:
		collectAnchors(v.Key, anchors, aliases)
		collectAnchors(v.Value, anchors, aliases)
	case *ast.MappingKeyNode:
		collectAnchors(v.Value, anchors, aliases)
	case *ast.SequenceNode:
		for _, e := range v.Values {
			collectAnchors(e, anchors, aliases)
		}
	case *ast.TagNode:
		collectAnchors(v.Value, anchors, aliases)
	case *ast.AnchorNode:
		collectAnchors(v.Value, anchors, aliases)
		if v.Name != nil && v.Name.GetToken() != nil {
			anchors[v.Name.GetToken().Value] = v.Value
		}
	case *ast.AliasNode:
		if v.Value != nil && v.Value.GetToken() != nil {
			if target, ok := anchors[v.Value.GetToken().Value]; ok {
				aliases[v] = target
			}
		}
	}
}

// resolve follows anchors and aliases to the node holding the value. It
// returns nil, false (after reporting) for an unknown alias or when the
// node budget is spent. A nil node is YAML null.
func (d *decoder) resolve(n ast.Node, field string) (ast.Node, bool) {
	for {
		if !d.spend(1, n, field) {
			return nil, false
		}
		switch v := n.(type) {
		case *ast.AnchorNode:
			n = v.Value
		case *ast.AliasNode:
			target, ok := d.aliases[v]
			if !ok {
				name := ""
				if v.Value != nil && v.Value.GetToken() != nil {
					name = v.Value.GetToken().Value
				}
				d.errorf(v, field, "alias *%s does not name an anchor (&%s) defined before it", name, name)
				return nil, false
			}
			n = target
		default:
			return n, true
		}
	}
}

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

// entry is one key: value pair of a mapping.
type entry struct {
	key     string
	keyNode ast.Node
	value   ast.Node
}

// mapping reads a mapping's entries in order, with merge keys ("<<")
// applied: keys written in the mapping win over merged ones, and earlier
// merge sources win over later ones, as YAML specifies.
func (d *decoder) mapping(n ast.Node, field, want string) ([]entry, ast.Node, bool) {
	n, ok := d.resolve(n, field)
	if !ok {
		return nil, nil, false
	}
	var values []*ast.MappingValueNode
	switch v := n.(type) {
	case *ast.MappingNode:
		values = v.Values
	case *ast.MappingValueNode:
		values = []*ast.MappingValueNode{v}
	default:
		if s, ok := d.scalar(n, field, want); ok {
			d.errorf(n, field, "expected %s, got %s", want, s.describe())
		}
		return nil, nil, false
	}
	if !d.spend(len(values), n, field) {
		return nil, nil, false
	}
	var own []entry
	var merged [][]entry
	ok = true
	for _, mv := range values {
		if mv.Key != nil && mv.Key.IsMergeKey() {
			srcs, good := d.mergeSources(mv.Value, field)
			merged = append(merged, srcs...)
			ok = ok && good
			continue
		}
		key, good := d.key(mv.Key, field)
		if !good {
			ok = false
			continue
		}
		own = append(own, entry{key: key, keyNode: mv.Key, value: mv.Value})
	}
	seen := make(map[string]bool, len(own))
	for _, e := range own {
		seen[e.key] = true
	}
	for _, src := range merged {
		for _, e := range src {
			if !seen[e.key] {
				seen[e.key] = true
				own = append(own, e)
			}
		}
	}
	return own, n, ok
}

// mergeSources reads the value of a "<<" key: a mapping or a list of them.
func (d *decoder) mergeSources(n ast.Node, field string) ([][]entry, bool) {
	const want = "a mapping or a list of mappings to merge"
	r, ok := d.resolve(n, field)
	if !ok {
		return nil, false
	}
	var srcs []ast.Node
	if seq, isSeq := r.(*ast.SequenceNode); isSeq {
		srcs = seq.Values
	} else {
		srcs = []ast.Node{n}
	}
	var out [][]entry
	for _, s := range srcs {
		entries, _, good := d.mapping(s, field, want)
		if !good {
			return nil, false
		}
		out = append(out, entries)
	}
	return out, true
}

// key reads a mapping key as a string.
func (d *decoder) key(n ast.Node, field string) (string, bool) {
	if k, isKey := n.(*ast.MappingKeyNode); isKey {
		n = k.Value
	}
	r, ok := d.resolve(n, field)
	if !ok {
		return "", false
	}
	switch v := r.(type) {
	case *ast.StringNode:
		return v.Value, true
	case ast.ScalarNode:
		if _, isTag := v.(*ast.TagNode); !isTag {
			return tokenText(v), true
		}
	}
	d.errorf(n, field, "mapping keys must be plain strings")
	return "", false
}

// object reads a mapping whose keys must come from allowed; see fields.
// It returns the entries by key and the mapping node (the position for
// "missing field" errors), or a nil node if n is not a mapping.
func (d *decoder) object(n ast.Node, field, want string, allowed []string) (map[string]entry, ast.Node) {
	entries, node, _ := d.mapping(n, field, want)
	if node == nil {
		return nil, nil
	}
	return d.fields(entries, field, allowed, false), node
}

// fields keeps the entries whose key is in allowed and reports every other
// key as unknown, with a suggestion for a likely misspelling. At the top
// level (extensions) keys starting with "x-" are ignored instead.
func (d *decoder) fields(entries []entry, field string, allowed []string, extensions bool) map[string]entry {
	out := make(map[string]entry, len(entries))
	for _, e := range entries {
		switch {
		case contains(allowed, e.key):
			out[e.key] = e
		case extensions && strings.HasPrefix(e.key, "x-"):
		default:
			msg := "unknown field"
			if s := suggest(e.key, allowed); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			d.errorf(e.keyNode, join(field, e.key), "%s; valid fields here: %s", msg, strings.Join(allowed, ", "))
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// suggest returns the allowed name closest to a misspelt key, if any is
// within two edits.
func suggest(key string, allowed []string) string {
	best, bestDist := "", 3
	for _, a := range allowed {
		if dist := editDistance(strings.ToLower(key), a); dist < bestDist {
			best, bestDist = a, dist
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// sequence reads a list.
func (d *decoder) sequence(n ast.Node, field, want string) ([]ast.Node, ast.Node, bool) {
	r, ok := d.resolve(n, field)
	if !ok {
		return nil, nil, false
	}
	if seq, isSeq := r.(*ast.SequenceNode); isSeq {
		if !d.spend(len(seq.Values), seq, field) {
			return nil, nil, false
		}
		return seq.Values, seq, true
	}
	if _, isMap := r.(*ast.MappingNode); isMap {
		d.errorf(r, field, "expected %s, got a mapping", want)
	} else if s, ok := d.scalar(r, field, want); ok {
		d.errorf(r, field, "expected %s, got %s", want, s.describe())
	}
	return nil, nil, false
}

// join builds a field path: join("steps[0]", "env") = "steps[0].env".
func join(parent, key string) string {
	if !envNameRE.MatchString(key) {
		key = strconv.Quote(key) // keep odd keys readable and unambiguous
	}
	if parent == "" {
		return key
	}
	return parent + "." + key
}

func index(parent string, i int) string {
	return fmt.Sprintf("%s[%d]", parent, i)
}
