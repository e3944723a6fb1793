// Package exitcode names cleanroom's process exit codes, one meaning for
// every front end: `cleanroom run` (the CLI), the GitLab custom executor's
// defaults (BUILD_FAILURE_EXIT_CODE, SYSTEM_FAILURE_EXIT_CODE) and the
// agent, which reads its child run's code to tell a failed build from a
// broken one. A caller that retries on infrastructure failures and reports
// build failures to the author depends on the two never being confused.
package exitcode

const (
	// OK: every step succeeded.
	OK = 0
	// BuildFailure: a step failed (the build's fault: its exit status,
	// timeout, out of memory, artifacts it promised but did not write).
	BuildFailure = 1
	// SystemFailure: the configuration or the infrastructure failed (bad
	// pipeline or flags, containerd down, signing refused, cancelled).
	SystemFailure = 2
)
