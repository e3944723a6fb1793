package pipeline

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/lexer"
	"github.com/goccy/go-yaml/parser"
)

// This file parses YAML into go-yaml's tree and resolves anchors and
// aliases; scalar.go and collection.go read values out of the tree. The
// tree is walked by hand instead of unmarshalling into structs because
// struct decoding stops at the first error, loses the position of values it
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
	pos       map[string]Pos              // field path -> position, for the linter
}

// decode parses data into p and returns every problem found, in file order.
func decode(file string, data []byte, o options, p *Pipeline) ErrorList {
	d := &decoder{file: file, opts: o, budget: maxNodes, pos: map[string]Pos{}}
	d.decode(data, p)
	p.positions = d.pos
	errs := d.errs.sorted()
	if d.truncated {
		last := errs[len(errs)-1]
		errs = append(errs, &Error{File: file, Line: last.Line, Column: last.Column,
			Msg: fmt.Sprintf("too many errors; showing the first %d", maxErrors)})
	}
	return errs
}

func (d *decoder) decode(data []byte, p *Pipeline) {
	if len(data) > MaxFileSize {
		d.errorf(nil, "", "the file is larger than %d bytes; is this really a pipeline file?", MaxFileSize)
		return
	}
	root, ok := d.parseYAML(data)
	if !ok {
		return
	}
	if root == nil {
		d.errorf(nil, "", "the file is empty; a pipeline needs at least `version: 1` and a list of steps")
		return
	}
	d.pipeline(root, p)
}

// mark records where field was written.
func (d *decoder) mark(n ast.Node, field string) {
	if n == nil || field == "" {
		return
	}
	if _, seen := d.pos[field]; seen {
		return
	}
	line, col := position(n)
	d.pos[field] = Pos{Line: line, Column: col}
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
