package gitlab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/cleanroom-ci/cleanroom/internal/exitcode"
	"github.com/cleanroom-ci/cleanroom/sandbox"
)

// Backend is the sandbox backend of one driver call: the executor, plus
// the two operations the GitLab contract needs beyond it.
type Backend interface {
	sandbox.Executor
	// Pull resolves a registry image, always asking the registry (with
	// the credentials auth gives for a host, if any), and returns it under
	// a name pinned to its digest. Asking every time means a job cannot
	// use a private image another job pulled without holding credentials
	// for it; pinning means a tag moved by a later pull cannot change
	// what this job runs between its stages.
	Pull(ctx context.Context, ref string, auth func(host string) (user, secret string, err error)) (sandbox.Image, error)
	// Signal sends sig to every process of the running sandbox id.
	Signal(ctx context.Context, id string, sig syscall.Signal) error
}

// Contract is what gitlab-runner passes to every driver call in its
// environment.
type Contract struct {
	BuildFailureExitCode  int
	SystemFailureExitCode int
	BuildExitCodeFile     string
	JobResponseFile       string
}

// ContractFromEnv reads the contract variables; the exit codes default to
// the runner's own values (1 and 2) when unset or invalid.
func ContractFromEnv(getenv func(string) string) Contract {
	code := func(k string, def int) int {
		n, err := strconv.Atoi(strings.TrimSpace(getenv(k)))
		if err != nil || n < 0 || n > 255 {
			return def
		}
		return n
	}
	return Contract{
		BuildFailureExitCode:  code("BUILD_FAILURE_EXIT_CODE", exitcode.BuildFailure),
		SystemFailureExitCode: code("SYSTEM_FAILURE_EXIT_CODE", exitcode.SystemFailure),
		BuildExitCodeFile:     getenv("BUILD_EXIT_CODE_FILE"),
		JobResponseFile:       getenv("JOB_RESPONSE_FILE"),
	}
}

// BuildError is a failure that is the job's: its script exited non-zero,
// or it asked for something the policy refuses. gitlab-runner does not
// retry these. ExitCode, when positive, is the script's own exit status.
type BuildError struct {
	ExitCode int
	Err      error
}

func (e *BuildError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("the stage script exited with status %d", e.ExitCode)
	}
	return e.Err.Error()
}

func (e *BuildError) Unwrap() error { return e.Err }

func buildErrorf(format string, args ...any) error {
	return &BuildError{Err: fmt.Errorf(format, args...)}
}

// ExitCode maps the result of a driver call onto the contract: nil is 0;
// a BuildError is $BUILD_FAILURE_EXIT_CODE, with the script's own exit
// status written to $BUILD_EXIT_CODE_FILE (what allow_failure:exit_codes
// reads); anything else is ours or the configuration's,
// $SYSTEM_FAILURE_EXIT_CODE.
func (c Contract) ExitCode(err error) int {
	if err == nil {
		return 0
	}
	var be *BuildError
	if errors.As(err, &be) {
		if be.ExitCode > 0 && c.BuildExitCodeFile != "" {
			os.WriteFile(c.BuildExitCodeFile, []byte(strconv.Itoa(be.ExitCode)+"\n"), 0o644)
		}
		return c.BuildFailureExitCode
	}
	return c.SystemFailureExitCode
}
