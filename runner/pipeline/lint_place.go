package pipeline

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"unicode/utf8"
)

// This file places findings precisely and reads inline suppressions, both
// from the file's text (Pipeline.source): a finding in a multi-line run:
// script points at the line of the match, and a comment
//
//	# cleanroom-lint: ignore=CR012,CR005
//
// on the finding's line, or alone on the line above it, suppresses those
// rules there and nowhere else, so that --strict does not force disabling
// a rule for the whole file. A comment inside a run: script is a shell
// comment, which the step ignores.

var suppressRE = regexp.MustCompile(`#\s*cleanroom-lint:\s*ignore=([^\s#]*)`)

// suppression is one ignore comment.
type suppression struct {
	line, column int      // of the comment
	lines        []int    // the lines it covers
	ids          []string // as written
}

// suppressions parses the ignore comments of the file, once.
func (l *linter) suppressions() []suppression {
	if l.supp != nil || l.p.source == nil {
		return l.supp
	}
	l.supp = []suppression{}
	for i, text := range strings.Split(string(l.p.source), "\n") {
		m := suppressRE.FindStringSubmatchIndex(text)
		if m == nil {
			continue
		}
		line := i + 1
		s := suppression{line: line, column: utf8.RuneCountInString(text[:m[0]]) + 1, lines: []int{line}}
		if strings.TrimSpace(text[:m[0]]) == "" {
			s.lines = append(s.lines, line+1) // a comment alone covers the next line
		}
		for _, id := range strings.Split(text[m[2]:m[3]], ",") {
			if id = strings.TrimSpace(id); id != "" {
				s.ids = append(s.ids, id)
			}
		}
		l.supp = append(l.supp, s)
	}
	return l.supp
}

// suppressed reports whether an ignore comment covers rule r on line.
func (l *linter) suppressed(r Rule, line int) bool {
	for _, s := range l.suppressions() {
		for _, covered := range s.lines {
			if covered != line {
				continue
			}
			for _, id := range s.ids {
				if strings.EqualFold(id, r.ID) || id == r.Name {
					return true
				}
			}
		}
	}
	return false
}

// lintSuppressions reports ignore comments that name no rule: a typo
// would otherwise leave the finding in place, or silently suppress nothing.
func lintSuppressions(l *linter) {
	for _, s := range l.suppressions() {
		if len(s.ids) == 0 {
			l.reportAt("", Pos{Line: s.line, Column: s.column}, "no rule id after ignore=")
			continue
		}
		for _, id := range s.ids {
			if _, ok := ruleByIDOrName(id); !ok {
				l.reportAt("", Pos{Line: s.line, Column: s.column}, fmt.Sprintf("unknown rule %q (rules: CR000-CR%03d, or their names)", id, len(rules)-1))
			}
		}
	}
}

func ruleByIDOrName(s string) (Rule, bool) {
	for _, r := range rules {
		if strings.EqualFold(s, r.ID) || s == r.Name {
			return r, true
		}
	}
	return Rule{}, false
}

// CheckRuleIDs fails on an id or name that is no rule, so that a typo in
// --lint-disable does not leave a rule on while looking disabled.
func CheckRuleIDs(ids []string) error {
	var bad []string
	for _, id := range ids {
		if _, ok := ruleByIDOrName(id); !ok {
			bad = append(bad, fmt.Sprintf("%q", id))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	names := make([]string, len(rules))
	for i, r := range rules {
		names[i] = r.ID + " " + r.Name
	}
	return fmt.Errorf("unknown lint rule %s; the rules are: %s", strings.Join(bad, ", "), strings.Join(names, ", "))
}

// matchPos is the position of script[start:] when script is the value of
// field: the occurrence of the matched text in the file, counted from the
// value's start. It falls back to the value's position when the text does
// not appear there as written (escapes in a quoted scalar, a match folded
// over lines).
func (l *linter) matchPos(field, script string, start, end int) Pos {
	vp, ok := l.p.Position(field)
	if !ok || l.p.source == nil {
		return vp
	}
	src := string(l.p.source)
	from, ok := offsetOf(src, vp)
	if !ok {
		return vp
	}
	limit := len(src)
	if next, ok := l.nextPosAfter(vp); ok {
		if o, ok := offsetOf(src, next); ok {
			limit = o
		}
	}
	match := script[start:end]
	nth := strings.Count(script[:start], match)
	region := src[from:limit]
	at := -1
	for i, off := 0, 0; i <= nth; i++ {
		j := strings.Index(region[off:], match)
		if j < 0 {
			return vp
		}
		at, off = off+j, off+j+len(match)
	}
	abs := from + at
	lineStart := strings.LastIndexByte(src[:abs], '\n') + 1
	return Pos{Line: strings.Count(src[:abs], "\n") + 1, Column: utf8.RuneCountInString(src[lineStart:abs]) + 1}
}

// nextPosAfter is the first recorded field position after p: where the
// value at p ends at the latest.
func (l *linter) nextPosAfter(p Pos) (Pos, bool) {
	var after []Pos
	for _, q := range l.p.positions {
		if q.Line > p.Line || (q.Line == p.Line && q.Column > p.Column) {
			after = append(after, q)
		}
	}
	if len(after) == 0 {
		return Pos{}, false
	}
	sort.Slice(after, func(i, j int) bool {
		return after[i].Line < after[j].Line || (after[i].Line == after[j].Line && after[i].Column < after[j].Column)
	})
	return after[0], true
}

// offsetOf turns a 1-based line and column (in characters) into a byte
// offset of src.
func offsetOf(src string, p Pos) (int, bool) {
	off := 0
	for line := 1; line < p.Line; line++ {
		i := strings.IndexByte(src[off:], '\n')
		if i < 0 {
			return 0, false
		}
		off += i + 1
	}
	for col := 1; col < p.Column; col++ {
		if off >= len(src) || src[off] == '\n' {
			return 0, false
		}
		_, size := utf8.DecodeRuneInString(src[off:])
		off += size
	}
	return off, true
}

// scriptMatches returns every non-overlapping match of the patterns in
// script, in order: each is a finding of its own.
func scriptMatches(script string, res []*regexp.Regexp) [][2]int {
	var all [][2]int
	for _, re := range res {
		for _, m := range re.FindAllStringIndex(script, -1) {
			all = append(all, [2]int{m[0], m[1]})
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i][0] < all[j][0] || (all[i][0] == all[j][0] && all[i][1] > all[j][1]) })
	var out [][2]int
	for _, m := range all {
		if len(out) > 0 && m[0] < out[len(out)-1][1] {
			continue // inside a match already reported
		}
		out = append(out, m)
	}
	return out
}
