// Package glob is cleanroom's one glob dialect, for every pattern an
// author or admin writes over slash-separated names: artifact paths, the
// GitLab artifacts:exclude list, image patterns (GitLab policy and agent),
// webhook refs. One dialect means a pattern reads the same in a pipeline,
// a runner policy and an agent config.
//
// A pattern is split at "/" into segments. A segment matches one segment
// of the name with Go's path.Match syntax: "*" any run of characters,
// "?" one character, "[...]" a class, "\" an escape; none of them ever
// matches "/". A segment that is exactly "**" matches any number of whole
// segments, none included: "a/**/b" matches "a/b" and "a/x/y/b", "out/**"
// everything below out. Inside a segment "**" is the same as "*" (as in
// GitLab's own artifacts:exclude). A pattern matches the whole name.
package glob

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// Pattern is a checked glob.
type Pattern struct {
	src  string
	segs []string
}

// Compile checks a pattern.
func Compile(p string) (Pattern, error) {
	if p == "" {
		return Pattern{}, errors.New("empty pattern")
	}
	var segs []string
	for _, s := range strings.Split(p, "/") {
		if s == "**" {
			if len(segs) > 0 && segs[len(segs)-1] == "**" {
				continue // a/**/**/b is a/**/b
			}
		} else if _, err := path.Match(s, ""); err != nil {
			return Pattern{}, fmt.Errorf("%q: %w (check the [ ] classes and \\ escapes: path.Match syntax per segment, ** for any number of segments)", p, err)
		}
		segs = append(segs, s)
	}
	return Pattern{src: p, segs: segs}, nil
}

// MustCompile is Compile for patterns known to be valid.
func MustCompile(p string) Pattern {
	g, err := Compile(p)
	if err != nil {
		panic(err)
	}
	return g
}

// String is the pattern as written.
func (g Pattern) String() string { return g.src }

// Segments are the pattern's segments, runs of "**" folded into one: for
// a matcher that walks a tree one directory at a time (MatchSegment each).
func (g Pattern) Segments() []string { return g.segs }

// Match reports whether the pattern matches the whole name.
func (g Pattern) Match(name string) bool {
	return matchSegs(g.segs, strings.Split(name, "/"))
}

// MatchOrUnder reports whether the pattern matches name or one of the
// directories above it: an excluded directory excludes what is in it.
func (g Pattern) MatchOrUnder(name string) bool {
	parts := strings.Split(name, "/")
	for i := len(parts); i > 0; i-- {
		if matchSegs(g.segs, parts[:i]) {
			return true
		}
	}
	return false
}

// MatchSegment matches one segment of a pattern against one name segment.
func MatchSegment(seg, name string) bool {
	ok, _ := path.Match(seg, name)
	return ok
}

func matchSegs(pat, name []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			rest := pat[1:]
			for i := 0; i <= len(name); i++ {
				if matchSegs(rest, name[i:]) {
					return true
				}
			}
			return false
		}
		if len(name) == 0 || !MatchSegment(pat[0], name[0]) {
			return false
		}
		pat, name = pat[1:], name[1:]
	}
	return len(name) == 0
}
