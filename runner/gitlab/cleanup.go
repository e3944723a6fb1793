package gitlab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/cleanroom-ci/cleanroom/internal/flock"
	"github.com/cleanroom-ci/cleanroom/runner"
)

// Cleanup answers cleanup_exec: remove every sandbox, namespace, directory
// and file of the job, and of any other job whose driver died. It never
// fails the job: problems are returned for logging only. It is safe to run
// any number of times, on a job that was never (or only half) prepared.
func (d *Driver) Cleanup(ctx context.Context) error {
	var errs []error
	log := d.log()
	resp, err := ReadResponse(d.Contract.JobResponseFile)
	if err != nil {
		errs = append(errs, err)
	}
	var job *jobDir
	if resp != nil {
		log = log.With("job", resp.ID)
		job, err = openJob(d.StateDir, resp.ID, false, lockWaitCleanup)
		if err != nil && !strings.Contains(err.Error(), "has no state") {
			errs = append(errs, err)
		}
	}
	// Connecting reaps the containers, snapshots and leases of every dead
	// call (this job's included), then runner.Reap their namespaces.
	lock, b, err := d.openBackend(ctx, log)
	if err != nil {
		errs = append(errs, fmt.Errorf("sandbox backend: %w", err))
	}
	runner.Reap(d.StateDir, log)
	if resp != nil && (job != nil || !jobLocked(d.StateDir, resp.ID)) {
		if err := removeJob(d.StateDir, resp.ID, d.buildsDir(resp)); err != nil {
			errs = append(errs, err)
		}
	}
	job.close()
	var self int64
	if resp != nil {
		self = resp.ID
	}
	errs = append(errs, d.sweep(self, log)...)
	if b != nil {
		// After the sweep: the images of swept jobs are no longer live.
		errs = append(errs, d.removeUnusedImages(ctx, b, log)...)
		b.Close()
		lock.Release()
	}
	if err := runner.ReleaseNetNSDir(d.StateDir, ""); err != nil {
		log.Warn("state directory", "error", err)
	}
	return errors.Join(errs...)
}

// jobLocked reports whether a live call holds a job's lock.
func jobLocked(stateDir string, id int64) bool {
	return flock.Held(filepath.Join(jobPath(stateDir, id), lockFile))
}

// sweep removes the state and builds directories of other jobs that are
// over but were never cleaned up (gitlab-runner killed, host crash): no
// call holds their lock, and either the runner has removed their payload
// (it does so only after cleanup) or their deadline has passed.
func (d *Driver) sweep(self int64, log hclog.Logger) []error {
	ents, err := os.ReadDir(jobsRoot(d.StateDir))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return []error{err}
	}
	var errs []error
	for _, e := range ents {
		id, err := strconv.ParseInt(e.Name(), 10, 64)
		if err != nil || id <= 0 || id == self || !e.IsDir() {
			continue
		}
		job, err := openJob(d.StateDir, id, false, 0)
		if err != nil {
			continue // locked by a live call, or not a job dir
		}
		st, serr := job.readState()
		stale := false
		buildsDir := filepath.Join(d.Policy.BuildsDir, strconv.FormatInt(id, 10))
		switch {
		case serr != nil:
			// A prepare that died before recording anything: stale once
			// its lock file is old.
			if fi, err := os.Stat(job.file(lockFile)); err == nil && d.timeNow().Sub(fi.ModTime()) > deadlineMargin {
				stale = true
			}
		default:
			if _, err := os.Stat(st.ResponseFile); errors.Is(err, os.ErrNotExist) || d.timeNow().After(st.Deadline) {
				stale = true
			}
			if filepath.Base(st.BuildsDir) == strconv.FormatInt(id, 10) && filepath.IsAbs(st.BuildsDir) {
				buildsDir = st.BuildsDir
			}
		}
		if stale {
			log.Info("removing an abandoned job", "abandoned_job", id)
			if err := removeJob(d.StateDir, id, buildsDir); err != nil {
				errs = append(errs, err)
			}
		}
		job.close()
	}
	return errs
}
