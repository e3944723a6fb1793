package agent

// childResult is the part of `cleanroom run --output json` the agent reads
// from its child: what the API and the page show of a run. It is the
// agent's own small copy of the wire format, so that the agent does not
// link the engine (package runner) only to decode it;
// TestChildResultDecodesRunnerResult keeps the two in step.
type childResult struct {
	Failed     string      `json:"failedStep"`
	SignedBy   string      `json:"signedBy"`
	Steps      []childStep `json:"steps"`
	Subjects   []childFile `json:"artifacts"`
	Provenance string      `json:"provenance"`
	Bundles    []string    `json:"bundles"`
}

type childStep struct {
	Name      string  `json:"name"`
	Status    string  `json:"status"`
	ExitCode  int     `json:"exitCode"`
	DurationS float64 `json:"durationSeconds"`
	Denials   []struct {
		Count int `json:"count"`
	} `json:"denials"`
}

type childFile struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}
