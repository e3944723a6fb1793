package runner

import (
	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
)

// Progress is told about long work while a run does it, for a live display
// on a terminal (the CLI's). It must be safe for concurrent use; nil in
// Config means none.
type Progress interface {
	// Begin says that what (an image import or pull, the hashing of the
	// artifacts) has started; the function it returns says it ended.
	Begin(what string) (end func())
	// Fetch reports one egress request the proxy finished, as recorded.
	Fetch(e egress.Event)
}

// begin starts a unit of progress, or does nothing without a Progress.
func (c Config) begin(what string) func() {
	if c.Progress == nil {
		return func() {}
	}
	return c.Progress.Begin(what)
}

// progressRecorder passes each recorded event on to Progress.
type progressRecorder struct {
	next egress.Recorder
	p    Progress
}

func (r progressRecorder) Record(e egress.Event) {
	r.next.Record(e)
	r.p.Fetch(e)
}

// imageWork names what resolving an image may involve.
func imageWork(ref pipeline.ImageRef) string {
	if ref.Kind == pipeline.Registry {
		return "pulling image"
	}
	return "importing image"
}
