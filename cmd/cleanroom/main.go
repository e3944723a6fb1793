// Command cleanroom runs build pipelines in hermetic sandboxes: every step
// in a fresh containerd sandbox with no network but an allowlisted,
// recording dependency proxy.
package main

import (
	"errors"
	"fmt"
	"os"
)

// Exit codes, the same meaning as GitLab's custom executor: a build failure
// is the build's fault, a system failure is ours or the configuration's.
const (
	exitOK            = 0
	exitBuildFailure  = 1
	exitSystemFailure = 2
)

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

func buildFailure(err error) error  { return &exitError{code: exitBuildFailure, err: err} }
func systemFailure(err error) error { return &exitError{code: exitSystemFailure, err: err} }

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	cmd := newRootCommand()
	cmd.SetArgs(args)
	err := cmd.Execute()
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(os.Stderr, "cleanroom:", ee.err)
		}
		return ee.code
	}
	// Flag and argument errors from cobra are usage errors: the command
	// line is configuration.
	fmt.Fprintln(os.Stderr, "cleanroom:", err)
	return exitSystemFailure
}
