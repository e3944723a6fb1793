package gitlab

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/distribution/reference"

	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
)

// imageRef is a validated image reference and the spellings of it that
// policy patterns are matched against.
type imageRef struct {
	// Raw is the reference as written (the job's image:name).
	Raw  string
	Kind pipeline.ImageKind
	// Registry is the registry host of a registry reference, as the
	// reference library normalises it.
	Registry string
	// Candidates are matched against the allowed patterns: for a registry
	// reference its full normalised name (host/library/golang:1.26 for a
	// reference without a host) and its familiar form (golang:1.26); for
	// an archive "KIND:PATH".
	Candidates []string
}

// parseImage checks an image reference. Archive paths must be absolute and
// clean: a job naming "oci-archive:../../etc/x" must not slip past a
// pattern like "oci-archive:/srv/images/*" by path tricks.
func parseImage(s string) (imageRef, error) {
	r, err := pipeline.ParseImageRef(s)
	if err != nil {
		return imageRef{}, err
	}
	ir := imageRef{Raw: s, Kind: r.Kind}
	if r.Kind != pipeline.Registry {
		if !filepath.IsAbs(r.Ref) || filepath.Clean(r.Ref) != r.Ref {
			return imageRef{}, fmt.Errorf("image %q: an archive path must be absolute and clean", s)
		}
		ir.Candidates = []string{r.String()}
		return ir, nil
	}
	named, err := reference.ParseDockerRef(s)
	if err != nil {
		return imageRef{}, fmt.Errorf("image %q: %w", s, err)
	}
	ir.Registry = reference.Domain(named)
	ir.Candidates = []string{named.String()}
	if fam := reference.FamiliarString(named); fam != named.String() {
		ir.Candidates = append(ir.Candidates, fam)
	}
	return ir, nil
}

// checkImagePattern validates one images.allowed entry.
func checkImagePattern(p string) error {
	body := strings.TrimPrefix(p, "!")
	if body == "" || strings.ContainsAny(body, " \t\n!") {
		return fmt.Errorf("%q is not an image pattern (e.g. golang:1.*, registry.example.org/team/**, oci-archive:/srv/images/*.tar, or !pattern to exclude)", p)
	}
	return nil
}

// globRE compiles an image pattern: "*" matches within one path segment,
// "**" across segments, "?" one character other than "/"; everything else
// is literal. Patterns match the whole reference.
func globRE(p string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(p); i++ {
		switch {
		case strings.HasPrefix(p[i:], "**"):
			b.WriteString(".*")
			i++
		case p[i] == '*':
			b.WriteString("[^/]*")
		case p[i] == '?':
			b.WriteString("[^/]")
		default:
			b.WriteString(regexp.QuoteMeta(p[i : i+1]))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// ImageAllowed reports whether the policy's patterns allow image: at least
// one pattern matches one of its spellings and no "!pattern" matches any.
func ImageAllowed(patterns []string, image string) (imageRef, error) {
	ir, err := parseImage(image)
	if err != nil {
		return imageRef{}, err
	}
	allowed := false
	for _, p := range patterns {
		neg := strings.HasPrefix(p, "!")
		re := globRE(strings.TrimPrefix(p, "!"))
		for _, c := range ir.Candidates {
			if !re.MatchString(c) {
				continue
			}
			if neg {
				return imageRef{}, fmt.Errorf("image %q is excluded by the runner's policy (%q)", image, p)
			}
			allowed = true
		}
	}
	if !allowed {
		return imageRef{}, fmt.Errorf("image %q is not allowed by the runner's policy; allowed: %s", image, strings.Join(patterns, ", "))
	}
	return ir, nil
}

var errNoImage = errors.New("the job names no image and the runner's policy has no images.default")
