package gitlab

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cleanroom-ci/cleanroom/internal/imagepattern"
)

// imageRef is a validated image reference and the spellings of it that
// policy patterns are matched against (internal/imagepattern, shared with
// the agent's images.allowed).
type imageRef = imagepattern.Image

// parseImage checks an image reference; archive paths must be absolute
// and clean.
func parseImage(s string) (imageRef, error) { return imagepattern.ParseImage(s) }

// checkImagePattern validates one images.allowed entry.
func checkImagePattern(p string) error { return imagepattern.Check(p) }

// ImageAllowed reports whether the policy's patterns allow image: at least
// one pattern matches one of its spellings and no "!pattern" matches any.
func ImageAllowed(patterns []string, image string) (imageRef, error) {
	ir, err := parseImage(image)
	if err != nil {
		return imageRef{}, err
	}
	set, err := imagepattern.Parse(patterns)
	if err != nil {
		return imageRef{}, fmt.Errorf("the runner's policy: images.allowed%w", err)
	}
	ok, excludedBy := set.Match(ir)
	if excludedBy != "" {
		return imageRef{}, fmt.Errorf("image %q is excluded by the runner's policy (%q)", image, excludedBy)
	}
	if !ok {
		return imageRef{}, fmt.Errorf("image %q is not allowed by the runner's policy; allowed: %s", image, strings.Join(patterns, ", "))
	}
	return ir, nil
}

var errNoImage = errors.New("the job names no image and the runner's policy has no images.default")
