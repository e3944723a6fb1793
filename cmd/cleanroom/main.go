// Command cleanroom runs build pipelines in hermetic sandboxes: every step
// in a fresh containerd sandbox with no network but an allowlisted,
// recording dependency proxy.
package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"syscall"

	"github.com/cleanroom-ci/cleanroom/internal/exitcode"
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

func buildFailure(err error) error  { return &exitError{code: exitcode.BuildFailure, err: err} }
func systemFailure(err error) error { return &exitError{code: exitcode.SystemFailure, err: err} }

func main() {
	ignoreSIGPIPE()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// ignoreSIGPIPE keeps a closed stdout or stderr (`cleanroom run | head -1`)
// from killing the process: by default the Go runtime dies of SIGPIPE on a
// write to a broken fd 1 or 2, in the middle of a run, before it removes its
// containers, namespaces and mounts. With the signal handled, such a write
// returns EPIPE instead, and the run finishes and cleans up. Notify (and not
// signal.Ignore) is used because an ignored disposition would be inherited
// by the processes cleanroom starts, while a handled one is reset to the
// default in them.
func ignoreSIGPIPE() {
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := newRootCommand()
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	err := cmd.Execute()
	if err == nil {
		return exitcode.OK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(stderr, "cleanroom:", ee.err)
		}
		return ee.code
	}
	// Flag and argument errors from cobra are usage errors: the command
	// line is configuration.
	fmt.Fprintln(stderr, "cleanroom:", err)
	return exitcode.SystemFailure
}

// geteuid is os.Geteuid, replaced in tests.
var geteuid = os.Geteuid

// needsRoot explains a permission error of a command run without root: the
// state directory, containerd's socket and the store belong to root, and
// "permission denied" alone does not say that sudo is the answer.
func needsRoot(command string, err error) error {
	if err == nil || geteuid() == 0 || !errors.Is(err, fs.ErrPermission) {
		return err
	}
	return fmt.Errorf("%s needs root (run it with sudo): %w", command, err)
}
