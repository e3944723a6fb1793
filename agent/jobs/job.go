// Package jobs is the agent's shared state: a work queue of jobs, the
// state of every job, live logs and stored outputs, all on NATS
// JetStream. One agent runs an embedded NATS server on local disk; several
// agents point at one external NATS cluster and share the same stream, so
// the queue, the retries and the failover are JetStream's (explicit acks,
// AckWait, redelivery), not a scheduler of our own.
package jobs

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"time"
)

// States of a job. A job moves queued → running → one of the terminal
// states; running → queued happens when an agent hands a job back while
// draining, or when a lost agent's job is retried.
const (
	StateQueued    = "queued"
	StateRunning   = "running"
	StateSucceeded = "succeeded" // every step exited 0 (exit 0)
	StateFailed    = "failed"    // a step failed: a build failure (exit 1)
	StateError     = "error"     // configuration or infrastructure failure (exit 2)
	StateCancelled = "cancelled"
)

// Causes of a job in state error.
const (
	CauseUser           = "user"
	CauseInfrastructure = "infrastructure"
)

// Terminal reports whether a job in this state will never run again.
func Terminal(state string) bool {
	switch state {
	case StateSucceeded, StateFailed, StateError, StateCancelled:
		return true
	}
	return false
}

// Job is what the agent knows about one job. It is stored as JSON in the
// job-state bucket under its ID and only ever changed by compare-and-set
// on the bucket's revision, so two agents cannot both claim it.
type Job struct {
	ID       string  `json:"id"`
	State    string  `json:"state"`
	Source   Source  `json:"source"`
	Pipeline string  `json:"pipeline"`
	Trigger  Trigger `json:"trigger"`
	// Untrusted: the code comes from outside the repository (a pull
	// request from a fork). It runs unsigned, without secrets, within the
	// agent's untrusted egress cap, under the untrusted builder id.
	Untrusted bool      `json:"untrusted,omitempty"`
	Created   time.Time `json:"created"`
	Started   time.Time `json:"started,omitzero"`
	Finished  time.Time `json:"finished,omitzero"`
	// Attempt counts the runs started; Agent holds the job while running
	// until LeaseUntil, which its heartbeat extends.
	Attempt    int       `json:"attempt"`
	Agent      string    `json:"agent,omitempty"`
	LeaseUntil time.Time `json:"leaseUntil,omitzero"`
	// CancelRequested is set by the API; the agent running the job sees
	// it through a watch and stops the run.
	CancelRequested bool   `json:"cancelRequested,omitempty"`
	CancelledBy     string `json:"cancelledBy,omitempty"`
	ExitCode        int    `json:"exitCode"`
	Error           string `json:"error,omitempty"`
	// Cause says whose a state error is: CauseUser (the pipeline, its
	// images or egress were refused) or CauseInfrastructure (the agent,
	// the sandbox, the source fetch, a time-out).
	Cause string `json:"cause,omitempty"`
	// History has one line per attempt: which agent, how it ended.
	History []Attempt `json:"history,omitempty"`
	Result  *Result   `json:"result,omitempty"`
	Outputs []Output  `json:"outputs,omitempty"`
}

// Source says where the job's workspace comes from: a git commit fetched
// by the agent, or a tarball uploaded with the job.
type Source struct {
	Kind string `json:"kind"` // "git" or "tarball"
	// Git: the remote (without credentials), the ref asked for and the
	// commit fetched (known when submitted by a webhook, else after fetch).
	Repository string `json:"repository,omitempty"`
	Ref        string `json:"ref,omitempty"`
	Commit     string `json:"commit,omitempty"`
	// Tarball: the digest and size of the upload, kept in the object store.
	SHA256 string `json:"sha256,omitempty"`
	Size   int64  `json:"size,omitempty"`
}

// Trigger says who asked for the job.
type Trigger struct {
	Kind     string `json:"kind"`            // "api", "github", "gitlab"
	Token    string `json:"token,omitempty"` // name of the API token
	Hook     string `json:"hook,omitempty"`
	Delivery string `json:"delivery,omitempty"`
	Pusher   string `json:"pusher,omitempty"`
	// PullRequest is the pull or merge request's number, 0 for a push.
	PullRequest int `json:"pullRequest,omitempty"`
	// RerunOf is the job this one runs again (same source, pipeline and
	// trust); Token then names who asked.
	RerunOf string `json:"rerunOf,omitempty"`
}

// Attempt is one run of a job.
type Attempt struct {
	N        int       `json:"n"`
	Agent    string    `json:"agent"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	Outcome  string    `json:"outcome,omitempty"`
}

// Result is the summary of a finished run, taken from the runner's own
// JSON result.
type Result struct {
	Steps      []Step     `json:"steps,omitempty"`
	FailedStep string     `json:"failedStep,omitempty"`
	Artifacts  []Artifact `json:"artifacts,omitempty"`
	Denials    int        `json:"denials"`
	SignedBy   string     `json:"signedBy,omitempty"`
	// Provenance and Bundles are output names (see Output).
	Provenance string   `json:"provenance,omitempty"`
	Bundles    []string `json:"bundles,omitempty"`
}

// Step is one step's outcome.
type Step struct {
	Name     string  `json:"name"`
	Status   string  `json:"status"`
	ExitCode int     `json:"exitCode"`
	Seconds  float64 `json:"durationSeconds"`
	Denied   int     `json:"denied"`
}

// Artifact is a signed subject.
type Artifact struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}

// Output is a file kept in the object store for download.
type Output struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// idRE is what a job ID looks like; IDs are keys in the state bucket and
// parts of object names and URLs, so anything else is refused.
var idRE = regexp.MustCompile(`^j[0-9]{8}t[0-9]{6}-[0-9a-f]{8}$`)

// NewID returns a job ID that sorts by submission time.
func NewID(now time.Time) string {
	var b [4]byte
	rand.Read(b[:])
	return "j" + now.UTC().Format("20060102t150405") + "-" + hex.EncodeToString(b[:])
}

// ValidID reports whether s is a job ID.
func ValidID(s string) bool { return idRE.MatchString(s) }

// hashKey turns an outside identifier (a webhook delivery ID) into a key
// the state bucket accepts, whatever characters it holds.
func hashKey(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}
