package gitlab

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/cleanroom-ci/cleanroom/runner"
)

// Driver carries out the four custom-executor calls. Every field is a
// plain input set by the command that wires it up.
type Driver struct {
	Policy   *Policy
	StateDir string
	Contract Contract
	// Getenv reads the call's environment (only the CUSTOM_ENV_ hints
	// that are validated before use).
	Getenv  func(string) string
	Version string
	Logger  hclog.Logger
	// Stdout is the job log for prepare and run: stage output streams
	// there live (the driver's own messages go to Logger).
	Stdout io.Writer
	// Open connects to the sandbox backend for a call holding run lock
	// runID; it reaps what dead runs left behind (see internal/runlock).
	Open func(ctx context.Context, runID string) (Backend, error)

	// sandboxed runs one stage; tests replace it.
	sandboxed func(context.Context, runner.SandboxEnv, runner.SandboxedStep) (runner.StepResult, error)
	now       func() time.Time
}

func (d *Driver) log() hclog.Logger {
	if d.Logger == nil {
		return hclog.NewNullLogger()
	}
	return d.Logger
}

func (d *Driver) timeNow() time.Time {
	if d.now != nil {
		return d.now()
	}
	return time.Now()
}

func (d *Driver) getenv(k string) string {
	if d.Getenv == nil {
		return ""
	}
	return d.Getenv(k)
}

func (d *Driver) stdout() io.Writer {
	if d.Stdout == nil {
		return io.Discard
	}
	return d.Stdout
}

// Lock waits: how long a call waits for another call of the same job.
const (
	lockWaitRun     = 2 * time.Minute
	lockWaitCleanup = 30 * time.Second
	// deadlineMargin is added to the job timeout before a job's leftovers
	// count as abandoned: after_script, cache and artifact stages run
	// after the job timeout's clock, and a sweep must never race them.
	deadlineMargin = 2 * time.Hour
	// defaultJobTimeout is assumed when the payload has none.
	defaultJobTimeout = time.Hour
	// maxScriptSize bounds a stage script read into memory.
	maxScriptSize = 64 << 20
	// stageScriptPath is where the rewritten script is mounted, read-only.
	stageScriptPath = "/cleanroom/stage-script"
	// gitlabRunnerPath is where helper.gitlab_runner is mounted.
	gitlabRunnerPath = "/usr/local/bin/gitlab-runner"
)

// ConfigOutput is what config_exec prints (see the contract's schema).
type ConfigOutput struct {
	BuildsDir         string            `json:"builds_dir"`
	CacheDir          string            `json:"cache_dir"`
	BuildsDirIsShared bool              `json:"builds_dir_is_shared"`
	Hostname          string            `json:"hostname,omitempty"`
	Driver            DriverInfo        `json:"driver"`
	JobEnv            map[string]string `json:"job_env"`
}

// DriverInfo names the driver in the job log.
type DriverInfo struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// Config answers config_exec: a builds directory and a cache directory of
// the job's own under the admin's roots. builds_dir_is_shared is false:
// no two jobs ever share a builds directory, so nothing one job leaves
// there can reach the next.
func (d *Driver) Config() (*ConfigOutput, error) {
	resp, err := ReadResponse(d.Contract.JobResponseFile)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	return &ConfigOutput{
		BuildsDir:         d.buildsDir(resp),
		CacheDir:          d.cacheDir(resp),
		BuildsDirIsShared: false,
		Hostname:          host,
		Driver:            DriverInfo{Name: "cleanroom", Version: d.Version},
		JobEnv:            map[string]string{},
	}, nil
}

func (d *Driver) buildsDir(r *Response) string {
	return filepath.Join(d.Policy.BuildsDir, strconv.FormatInt(r.ID, 10))
}

// cacheDir is per project: the cache carries files from one job of a
// project to the next, never to another project.
func (d *Driver) cacheDir(r *Response) string {
	return filepath.Join(d.Policy.CacheDir, strconv.FormatInt(r.JobInfo.ProjectID, 10))
}
