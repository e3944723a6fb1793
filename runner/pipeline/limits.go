package pipeline

import (
	"fmt"

	"github.com/goccy/go-yaml/token"
)

// Bounds on the shape of a pipeline file, checked on the token stream
// before go-yaml builds its tree. go-yaml's parser recurses once per key
// of a block mapping and once per nesting level, copying as it returns, so
// its time grows with the square of those counts: a 200 KiB file of
// "kN: v" lines takes seconds and deep "[[[[…" minutes. A pipeline comes
// from the repository being built, which is not trusted to be kind, so
// the runner refuses such shapes up front. Real pipelines are nowhere near
// these bounds (the schema nests five levels deep).
const (
	maxDepth          = 64   // nesting of mappings and lists
	maxKeysPerMapping = 1000 // keys in one mapping
)

// checkShape reports the first place where tokens exceed the bounds: the
// token there and what is wrong.
func checkShape(tokens token.Tokens) (*token.Token, string) {
	type level struct{ col, keys int }
	var block []level // open block collections by indentation column
	var flow []int    // keys in each open flow collection
	line := 0
	for _, tk := range tokens {
		if tk.Position == nil {
			continue
		}
		switch tk.Type {
		case token.SequenceStartType, token.MappingStartType:
			flow = append(flow, 0)
			if len(flow) > maxDepth {
				return tk, fmt.Sprintf("lists and mappings are nested more than %d levels deep", maxDepth)
			}
			continue
		case token.SequenceEndType, token.MappingEndType:
			if len(flow) > 0 {
				flow = flow[:len(flow)-1]
			}
			continue
		case token.CommentType:
			continue
		}
		if len(flow) > 0 {
			if tk.Type == token.MappingValueType {
				flow[len(flow)-1]++
				if flow[len(flow)-1] > maxKeysPerMapping {
					return keyOf(tk), fmt.Sprintf("a mapping has more than %d keys", maxKeysPerMapping)
				}
			}
			continue
		}
		col := tk.Position.Column
		// The first token on a line closes the block collections indented
		// deeper than it.
		if tk.Position.Line != line {
			line = tk.Position.Line
			for len(block) > 0 && block[len(block)-1].col > col {
				block = block[:len(block)-1]
			}
		}
		at := tk // where to report a problem
		switch tk.Type {
		case token.SequenceEntryType:
		case token.MappingValueType:
			at = keyOf(tk)
			col = at.Position.Column
		default:
			continue
		}
		for len(block) > 0 && block[len(block)-1].col > col {
			block = block[:len(block)-1]
		}
		if len(block) == 0 || block[len(block)-1].col != col {
			block = append(block, level{col: col})
			if len(block) > maxDepth {
				return at, fmt.Sprintf("lists and mappings are nested more than %d levels deep", maxDepth)
			}
		}
		if tk.Type == token.MappingValueType {
			block[len(block)-1].keys++
			if block[len(block)-1].keys > maxKeysPerMapping {
				return at, fmt.Sprintf("a mapping has more than %d keys", maxKeysPerMapping)
			}
		}
	}
	return nil, ""
}

// keyOf returns the key token before a ':' token, or the ':' itself.
func keyOf(colon *token.Token) *token.Token {
	if colon.Prev != nil && colon.Prev.Position != nil {
		return colon.Prev
	}
	return colon
}
