package pipeline

import (
	"fmt"
	"os"
)

// CheckArchives checks that every image archive the given steps run in
// (all steps when names is empty) exists, before a run imports anything.
// Each missing archive is one Error at the image field that names it, with
// the path as written and as resolved against the pipeline's directory;
// an archive shared by several steps is reported once, at its first field.
// Parse cannot do this: it never looks at the file system.
func CheckArchives(p *Pipeline, names []string) error {
	steps, err := p.Select(names)
	if err != nil {
		return err
	}
	var list ErrorList
	seen := map[string]bool{}
	for _, s := range steps {
		field := "image"
		if s.Image != "" {
			field = fmt.Sprintf("steps[%d].image", p.stepIndex(s.Name))
		}
		ref, err := ParseImageRef(p.StepImage(s))
		if err != nil || ref.Kind == Registry || seen[field] {
			continue
		}
		seen[field] = true
		abs := ref.Resolve(p.Dir).Ref
		fi, err := os.Stat(abs)
		msg := ""
		switch {
		case err != nil && os.IsNotExist(err):
			msg = fmt.Sprintf("archive %s does not exist", ref.Ref)
		case err != nil:
			msg = fmt.Sprintf("archive %s: %v", ref.Ref, err)
		case fi.IsDir():
			msg = fmt.Sprintf("archive %s is a directory, not an image archive (pack it with `cleanroom image pack`)", ref.Ref)
		default:
			continue
		}
		if abs != ref.Ref {
			msg += " (" + abs + ")"
		}
		pos, _ := p.Position(field)
		list = append(list, &Error{File: p.Path, Line: pos.Line, Column: pos.Column, Field: field, Msg: msg})
	}
	if len(list) > 0 {
		return list.sorted()
	}
	return nil
}

func (p *Pipeline) stepIndex(name string) int {
	for i, s := range p.Steps {
		if s.Name == name {
			return i
		}
	}
	return -1
}
