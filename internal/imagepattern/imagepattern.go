// Package imagepattern is the one image allowlist of cleanroom's admin
// configurations: the GitLab driver's policy (images.allowed) and the
// agent's config (images.allowed). A job's pipeline comes from whoever can
// push to a repository, and the runner reads image archives from the host
// and pulls from registries: the admin's patterns decide which of those a
// job may name, so both front ends read them the same way.
//
// A pattern is a glob (internal/glob: "*" within a segment, "**" across
// segments) matched against an image's spellings; "!pattern" excludes, and
// an exclusion wins over every allow.
package imagepattern

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/distribution/reference"

	"github.com/cleanroom-ci/cleanroom/internal/glob"
	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
)

// Image is a checked image reference and the spellings of it that
// patterns are matched against.
type Image struct {
	// Raw is the reference as written.
	Raw  string
	Kind pipeline.ImageKind
	// Registry is the registry host of a registry reference, as the
	// reference library normalises it.
	Registry string
	// Candidates are matched against the patterns: for a registry
	// reference its full normalised name (host/library/golang:1.26 for a
	// reference without a host) and its familiar form (golang:1.26); for
	// an archive "KIND:PATH".
	Candidates []string
}

// ParseImage checks an image reference. Archive paths must be absolute and
// clean: a job naming "oci-archive:../../etc/x" must not slip past a
// pattern like "oci-archive:/srv/images/*" by path tricks.
func ParseImage(s string) (Image, error) {
	r, err := pipeline.ParseImageRef(s)
	if err != nil {
		return Image{}, err
	}
	img := Image{Raw: s, Kind: r.Kind}
	if r.Kind != pipeline.Registry {
		if !filepath.IsAbs(r.Ref) || filepath.Clean(r.Ref) != r.Ref {
			return Image{}, fmt.Errorf("image %q: an archive path must be absolute and clean", s)
		}
		img.Candidates = []string{r.String()}
		return img, nil
	}
	named, err := reference.ParseDockerRef(s)
	if err != nil {
		return Image{}, fmt.Errorf("image %q: %w", s, err)
	}
	img.Registry = reference.Domain(named)
	img.Candidates = []string{named.String()}
	if fam := reference.FamiliarString(named); fam != named.String() {
		img.Candidates = append(img.Candidates, fam)
	}
	return img, nil
}

// Check validates one pattern as written in a config.
func Check(p string) error {
	_, _, err := parse(p)
	return err
}

func parse(p string) (glob.Pattern, bool, error) {
	body, neg := strings.CutPrefix(p, "!")
	if body == "" || strings.ContainsAny(body, " \t\n!") {
		return glob.Pattern{}, false, fmt.Errorf("%q is not an image pattern (e.g. golang:1.*, registry.example.org/team/**, oci-archive:/srv/images/*.tar, or !pattern to exclude)", p)
	}
	g, err := glob.Compile(body)
	if err != nil {
		return glob.Pattern{}, false, fmt.Errorf("%q is not an image pattern: %w", p, err)
	}
	return g, neg, nil
}

// Set is a checked list of patterns.
type Set struct {
	src         []string
	allow, deny []glob.Pattern
}

// Parse checks every pattern of a list; the error names the first bad one
// by its index.
func Parse(patterns []string) (Set, error) {
	s := Set{src: patterns}
	for i, p := range patterns {
		g, neg, err := parse(p)
		if err != nil {
			return Set{}, fmt.Errorf("[%d]: %w", i, err)
		}
		if neg {
			s.deny = append(s.deny, g)
		} else {
			s.allow = append(s.allow, g)
		}
	}
	return s, nil
}

// MustParse is Parse for lists already checked when a config was loaded.
func MustParse(patterns []string) Set {
	s, err := Parse(patterns)
	if err != nil {
		panic(err)
	}
	return s
}

// Patterns are the patterns as written.
func (s Set) Patterns() []string { return s.src }

// Match reports whether the set allows img: at least one pattern matches
// one of its spellings and no "!pattern" matches any. When an exclusion
// matched, excludedBy is it, as written.
func (s Set) Match(img Image) (allowed bool, excludedBy string) {
	for _, g := range s.deny {
		for _, c := range img.Candidates {
			if g.Match(c) {
				return false, "!" + g.String()
			}
		}
	}
	for _, g := range s.allow {
		for _, c := range img.Candidates {
			if g.Match(c) {
				return true, ""
			}
		}
	}
	return false, ""
}
