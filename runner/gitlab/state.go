package gitlab

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/cleanroom-ci/cleanroom/internal/atomicfile"
	"github.com/cleanroom-ci/cleanroom/internal/flock"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
)

// Every job keeps its state under <state-dir>/gitlab/<job id>/, owned by
// root and closed to everyone else (it holds the rewritten stage scripts,
// which still carry the job token):
//
//	lock           flock held by whichever driver call is working on the job
//	job.json       what prepare decided (JobState)
//	stages.jsonl   one StageRecord per run call
//	egress.jsonl   every egress decision of every stage, appended by each run
//	scripts/       the rewritten stage scripts, mounted read-only into stages
//	provenance     marker: the provenance has been written
const (
	jobFile        = "job.json"
	stagesFile     = "stages.jsonl"
	egressFile     = "egress.jsonl"
	lockFile       = "lock"
	scriptsDir     = "scripts"
	servicesDir    = "services" // hosts files and logs of the stages' services
	provenanceMark = "provenance"
)

// JobState is what prepare decided for a job, read by every later call.
type JobState struct {
	JobID     int64     `json:"jobId"`
	ProjectID int64     `json:"projectId"`
	Prepared  time.Time `json:"prepared"`
	// Deadline is when the job is over whatever happened: a job dir past
	// it, and not locked, is swept by any later cleanup.
	Deadline time.Time `json:"deadline"`
	// ResponseFile is gitlab-runner's payload for the job; the runner
	// removes it (with its temp dir) after cleanup, so its absence also
	// tells a sweeper the job is over.
	ResponseFile string `json:"responseFile"`
	// BuildsDir is the job's own builds directory, mounted at the same
	// path in every stage; ProjectDir is CI_PROJECT_DIR inside it.
	BuildsDir  string `json:"buildsDir"`
	CacheDir   string `json:"cacheDir"`
	ProjectDir string `json:"projectDir"`
	// Image runs the user stages, Helper the stages that talk to GitLab.
	Image  ImageState `json:"image"`
	Helper ImageState `json:"helper"`
	// Allow is the user stages' egress; Requested what the job asked for
	// (recorded in the provenance); HelperAllow the helper stages' egress.
	Allow       []string `json:"allow"`
	Requested   []string `json:"requested,omitempty"`
	HelperAllow []string `json:"helperAllow"`
	// Definition is the sha256 of the job definition (Response.Definition).
	Definition string `json:"definition"`
	// Services run beside the user stages (services.go).
	Services []ServiceState `json:"services,omitempty"`
}

// ImageState is a resolved image.
type ImageState struct {
	Ref    string `json:"ref"`
	Name   string `json:"name"`
	Digest string `json:"digest"`
}

// StageRecord is how one run call ended.
type StageRecord struct {
	Stage    string          `json:"stage"`
	Kind     Kind            `json:"kind"`
	Image    string          `json:"image"`
	Digest   string          `json:"digest"`
	Allow    []string        `json:"allow"`
	Status   string          `json:"status"` // ok, failed, timeout, oom, cancelled, error
	ExitCode int             `json:"exitCode"`
	Started  time.Time       `json:"started"`
	Finished time.Time       `json:"finished"`
	Denials  []egress.Denial `json:"denials,omitempty"`
}

// jobDir is the state directory of one job.
type jobDir struct {
	path string
	lock *flock.Lock
}

func jobsRoot(stateDir string) string { return filepath.Join(stateDir, "gitlab") }

func jobPath(stateDir string, id int64) string {
	return filepath.Join(jobsRoot(stateDir), strconv.FormatInt(id, 10))
}

// openJob opens (creating when create is set) a job's state directory and
// takes its lock, waiting up to wait for another call of the same job to
// finish with it. gitlab-runner calls the driver for one job one stage at
// a time; the lock is for the sweeper of another job's cleanup, which
// must never remove a job a live call is using.
func openJob(stateDir string, id int64, create bool, wait time.Duration) (*jobDir, error) {
	p := jobPath(stateDir, id)
	if create {
		if err := os.MkdirAll(jobsRoot(stateDir), 0o700); err != nil {
			return nil, err
		}
		if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, err
		}
	}
	lock, err := flock.AcquireWithin(filepath.Join(p, lockFile), flock.Exclusive, wait)
	if errors.Is(err, flock.ErrLocked) {
		return nil, fmt.Errorf("job %d is locked by another driver call: %w", id, err)
	}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("job %d has no state under %s: was prepare run (or has cleanup already removed it)?", id, jobsRoot(stateDir))
		}
		return nil, err
	}
	return &jobDir{path: p, lock: lock}, nil
}

func (j *jobDir) close() {
	if j != nil && j.lock != nil {
		j.lock.Release()
		j.lock = nil
	}
}

func (j *jobDir) file(name string) string { return filepath.Join(j.path, name) }

func (j *jobDir) readState() (*JobState, error) {
	b, err := os.ReadFile(j.file(jobFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, errors.New("the job was not prepared (no job.json): prepare must succeed before run")
		}
		return nil, err
	}
	var st JobState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("job state %s: %w", j.file(jobFile), err)
	}
	return &st, nil
}

func (j *jobDir) writeState(st *JobState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(j.file(jobFile), 0o644, func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	})
}

func (j *jobDir) appendStage(r StageRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(j.file(stagesFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (j *jobDir) stages() ([]StageRecord, error) {
	f, err := os.Open(j.file(stagesFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []StageRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var r StageRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s: %w", j.file(stagesFile), err)
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

// readEvents reads the job's egress log.
func (j *jobDir) readEvents() ([]egress.Event, error) {
	f, err := os.Open(j.file(egressFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []egress.Event
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var e egress.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			// A run killed mid-write leaves a partial last line; what
			// came before is still good.
			continue
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// removeJob deletes what a job created on the host: its builds directory
// and its state directory. The cache directory is the project's, kept
// across jobs on purpose.
func removeJob(stateDir string, id int64, buildsDir string) error {
	var errs []error
	if buildsDir != "" {
		if err := os.RemoveAll(buildsDir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(jobPath(stateDir, id)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
