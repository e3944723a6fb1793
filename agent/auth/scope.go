// Package auth is the agent's API authentication: bearer tokens with a
// scope, kept as SHA-256 hashes in a small JSON file that the `cleanroom
// agent token` commands edit and a running agent re-reads, and an HTTP
// middleware that checks them with a per-address limit on failed attempts.
//
// A token's secret exists in exactly one place after creation: the one
// print of `token create`. The file, the logs and every error hold only the
// hash, the token's id and its name.
package auth

import "fmt"

// Scope is what a token may do. Scopes are nested: admin ⊇ submit ⊇ read.
type Scope string

const (
	// ScopeRead: job status, logs, artifact downloads and the web page.
	ScopeRead Scope = "read"
	// ScopeSubmit: read, plus submitting jobs and cancelling the token's
	// own jobs.
	ScopeSubmit Scope = "submit"
	// ScopeAdmin: everything, including cancelling any job.
	ScopeAdmin Scope = "admin"
)

// rank orders the scopes; 0 is not a scope, so an unknown scope neither
// allows nor is allowed anything.
func (s Scope) rank() int {
	switch s {
	case ScopeRead:
		return 1
	case ScopeSubmit:
		return 2
	case ScopeAdmin:
		return 3
	}
	return 0
}

// ParseScope accepts exactly the three scope names.
func ParseScope(s string) (Scope, error) {
	if sc := Scope(s); sc.rank() > 0 {
		return sc, nil
	}
	return "", fmt.Errorf("unknown scope %q: use read, submit or admin", s)
}

// Allows reports whether a token of scope s may do what needs scope need.
func (s Scope) Allows(need Scope) bool {
	return need.rank() > 0 && s.rank() >= need.rank()
}

func (s Scope) String() string { return string(s) }
