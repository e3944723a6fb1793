package agent

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/cleanroom-ci/cleanroom/internal/imagepattern"
	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
)

// checkImages refuses a pipeline whose images the agent's admin did not
// allow. A job's pipeline comes from whoever can push to a repository, and
// the runner reads image archives from the host: without this check a
// pipeline could name any archive on the agent's disk (another team's
// builder image) or any registry. Archives inside the job's own workspace
// are always allowed (they came with the source and are recorded by
// digest); anything else must match images.allowed, read as the GitLab
// driver reads its policy's (internal/imagepattern: "**" across segments,
// "!pattern" excludes).
func checkImages(p *pipeline.Pipeline, workspace string, allowed []string) error {
	ws, err := filepath.EvalSymlinks(workspace)
	if err != nil {
		return err
	}
	set, err := imagepattern.Parse(allowed)
	if err != nil {
		return fmt.Errorf("images.allowed%w", err)
	}
	type use struct {
		what, written string
		ref           pipeline.ImageRef
	}
	var uses []use
	for _, s := range p.Steps {
		uses = append(uses, use{fmt.Sprintf("step %q", s.Name), p.StepImage(s), p.StepImageRef(s)})
		// Service images come from the same pipeline: the same rule.
		for _, svc := range p.StepServices(s) {
			uses = append(uses, use{fmt.Sprintf("step %q: service %q", s.Name, svc.Alias), svc.Image, p.ServiceImageRef(svc)})
		}
	}
	for _, u := range uses {
		written, ref := u.written, u.ref
		if ref.Kind == pipeline.OCIArchive || ref.Kind == pipeline.DockerArchive {
			real, err := filepath.EvalSymlinks(ref.Ref)
			if err == nil && (real == ws || strings.HasPrefix(real, ws+string(filepath.Separator))) {
				continue
			}
			if err != nil {
				real = ref.Ref
			}
			if ok, _ := allows(set, ref.Kind.String()+":"+real); ok {
				continue
			}
			return fmt.Errorf("%s: image %q is an archive outside the job's source; put it in the repository or add its path to images.allowed in the agent config", u.what, written)
		}
		if ok, excludedBy := allows(set, written); !ok {
			if excludedBy != "" {
				return fmt.Errorf("%s: image %q is excluded on this agent by images.allowed (%q)", u.what, written, excludedBy)
			}
			return fmt.Errorf("%s: image %q is not allowed on this agent; ask its admin to add a pattern for it to images.allowed", u.what, written)
		}
	}
	return nil
}

// allows matches one reference; one that does not parse is not allowed.
func allows(set imagepattern.Set, ref string) (bool, string) {
	img, err := imagepattern.ParseImage(ref)
	if err != nil {
		return false, ""
	}
	return set.Match(img)
}
