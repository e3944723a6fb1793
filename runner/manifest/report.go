package manifest

import (
	"fmt"
	"strings"
)

// Report is what Verify found, for a person (Text) or a program (JSON).
type Report struct {
	Builder      string   `json:"builder"`
	SourceRepo   string   `json:"sourceRepo,omitempty"`
	SourceCommit string   `json:"sourceCommit,omitempty"`
	FailedStep   string   `json:"failedStep,omitempty"`
	Images       []string `json:"images"`
	// Services are the service containers that ran beside steps.
	Services      []ServiceImage `json:"services,omitempty"`
	Dependencies  int            `json:"dependencies"`
	WithoutDigest int            `json:"withoutDigest"`
	// Fetched lists the dependencies (URL, sha256), in the statement's order.
	Fetched   []FetchedDependency `json:"fetched"`
	Denied    int                 `json:"denied"`
	Runtime   string              `json:"runtime,omitempty"`
	Artifacts []ArtifactResult    `json:"artifacts"`
	Failures  []string            `json:"failures"`
	// Passed lists the policy checks that held, one line each.
	Passed []string `json:"passed"`
}

// FetchedDependency is one recorded fetch; SHA256 is empty for an opaque
// tunnel, whose content was not seen.
type FetchedDependency struct {
	URI    string `json:"uri"`
	SHA256 string `json:"sha256,omitempty"`
}

// ArtifactResult is the check of one artifact against the subjects.
type ArtifactResult struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
	// Subject is the name of the subject with the same digest, empty if
	// none has it.
	Subject string `json:"subject,omitempty"`
	// NameMatch tells whether Subject names this path (equal, or a suffix
	// at a path boundary). A renamed copy of an artifact still verifies:
	// the digest is what is attested; the name is only reported.
	NameMatch bool `json:"nameMatch"`
	OK        bool `json:"ok"`
}

// OK reports whether every check passed.
func (r Report) OK() bool { return len(r.Failures) == 0 }

// Text renders the report for a terminal.
func (r Report) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "builder:       %s\n", r.Builder)
	if r.SourceRepo != "" || r.SourceCommit != "" {
		fmt.Fprintf(&b, "source:        %s %s\n", r.SourceRepo, r.SourceCommit)
	}
	if r.FailedStep != "" {
		fmt.Fprintf(&b, "failed step:   %s\n", r.FailedStep)
	}
	fmt.Fprintf(&b, "images:        %d\n", len(r.Images))
	for _, im := range r.Images {
		fmt.Fprintf(&b, "  %s\n", im)
	}
	if len(r.Services) > 0 {
		fmt.Fprintf(&b, "services:      %d\n", len(r.Services))
		for _, s := range r.Services {
			fmt.Fprintf(&b, "  %s (step %s): %s\n", s.Alias, s.Step, s.Image)
		}
	}
	fmt.Fprintf(&b, "dependencies:  %d fetched, %d without digest\n", r.Dependencies, r.WithoutDigest)
	for _, d := range r.Fetched {
		sum := "(no digest: content not seen)"
		if d.SHA256 != "" {
			sum = "sha256:" + d.SHA256
		}
		fmt.Fprintf(&b, "  %s  %s\n", d.URI, sum)
	}
	fmt.Fprintf(&b, "denied egress: %d\n", r.Denied)
	fmt.Fprintf(&b, "artifacts:     %d\n", len(r.Artifacts))
	for _, a := range r.Artifacts {
		status, note := "OK  ", ""
		switch {
		case !a.OK:
			status, note = "FAIL", "  not attested"
		case !a.NameMatch:
			note = "  (attested as " + a.Subject + ")"
		}
		fmt.Fprintf(&b, "  %s %s  sha256:%s%s\n", status, a.Path, a.SHA256, note)
	}
	if len(r.Passed) > 0 {
		fmt.Fprintf(&b, "policy passed: %d\n", len(r.Passed))
		for _, p := range r.Passed {
			fmt.Fprintf(&b, "  OK   %s\n", p)
		}
	}
	if r.OK() {
		b.WriteString("result:        verified\n")
		return b.String()
	}
	fmt.Fprintf(&b, "result:        FAILED (%d)\n", len(r.Failures))
	for _, f := range r.Failures {
		fmt.Fprintf(&b, "  - %s\n", f)
	}
	return b.String()
}
