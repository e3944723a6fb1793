package pipeline

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml/ast"
)

// This file reads mappings and lists: merge keys, unknown-field checks
// with spelling suggestions, and the field paths used in errors.

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
	d.mark(node, field)
	return d.fields(entries, field, allowed, false), node
}

// fields keeps the entries whose key is in allowed and reports every other
// key as unknown, with a suggestion for a likely misspelling. At the top
// level (extensions) keys starting with "x-" are ignored instead.
func (d *decoder) fields(entries []entry, field string, allowed []string, extensions bool) map[string]entry {
	out := make(map[string]entry, len(entries))
	for _, e := range entries {
		switch {
		case slices.Contains(allowed, e.key):
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
