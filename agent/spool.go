package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/cleanroom-ci/cleanroom/agent/jobs"
)

// While NATS is unreachable the agent still takes submissions and webhook
// deliveries: each is spooled to its data directory and answered 202 with
// its job ID ("spooled": true), then queued, in order, once NATS is back
// (also after a restart). A forge gives a delivery about ten seconds and
// does not always retry, and a CI job submitting a build should not fail
// because the queue restarts.

// spooled is one submission waiting for NATS.
type spooled struct {
	Job   jobs.Job `json:"job"`
	Dedup []string `json:"dedup,omitempty"`
}

// submitTimeout bounds a submission's wait for NATS before it is spooled:
// under a forge's delivery timeout.
const submitTimeout = 5 * time.Second

func (a *Agent) spoolDir() string { return filepath.Join(a.cfg.DataDir, "spool") }

// submitOrSpool queues a job, or spools it when NATS is unreachable.
// tarball, if set, is the upload's temporary file; a spooled job takes it
// over (renames it into the spool).
func (a *Agent) submitOrSpool(ctx context.Context, job jobs.Job, tarball *os.File, dedup ...string) (jobs.Job, bool, error) {
	if a.broker.Connected() {
		sctx, cancel := context.WithTimeout(ctx, submitTimeout)
		var r io.Reader
		if tarball != nil {
			r = tarball
		}
		got, err := a.broker.Submit(sctx, job, r, dedup...)
		cancel()
		if err == nil || !a.broker.Unreachable(err) {
			return got, false, err
		}
		a.log.Warn("NATS unreachable while queueing a job: spooling it", "job", job.ID, "error", err)
	}
	if err := os.MkdirAll(a.spoolDir(), 0o700); err != nil {
		return jobs.Job{}, false, err
	}
	base := filepath.Join(a.spoolDir(), job.ID)
	if tarball != nil {
		if err := os.Rename(tarball.Name(), base+".tar"); err != nil {
			return jobs.Job{}, false, fmt.Errorf("spool the upload: %w", err)
		}
	}
	job.State = jobs.StateQueued
	data, _ := json.Marshal(spooled{Job: job, Dedup: dedup})
	if err := os.WriteFile(base+".json.tmp", data, 0o600); err != nil {
		return jobs.Job{}, false, err
	}
	if err := os.Rename(base+".json.tmp", base+".json"); err != nil {
		return jobs.Job{}, false, err
	}
	a.metrics.spoolChanged(a.countSpooled())
	return job, true, nil
}

// spooledJob returns a spooled job by ID, for GET before it is queued.
func (a *Agent) spooledJob(id string) (jobs.Job, bool) {
	if !jobs.ValidID(id) {
		return jobs.Job{}, false
	}
	data, err := os.ReadFile(filepath.Join(a.spoolDir(), id+".json"))
	var s spooled
	if err != nil || json.Unmarshal(data, &s) != nil {
		return jobs.Job{}, false
	}
	return s.Job, true
}

func (a *Agent) countSpooled() int {
	m, _ := filepath.Glob(filepath.Join(a.spoolDir(), "*.json"))
	return len(m)
}

// flushSpool queues spooled jobs in submission order until NATS fails
// again. A spooled job is removed only once queued (a repeat is
// harmless: the broker recognises the same job).
func (a *Agent) flushSpool(ctx context.Context) {
	files, _ := filepath.Glob(filepath.Join(a.spoolDir(), "*.json"))
	sort.Strings(files) // job IDs sort by submission time
	for _, f := range files {
		if ctx.Err() != nil || !a.broker.Connected() {
			return
		}
		data, err := os.ReadFile(f)
		var s spooled
		if err == nil {
			err = json.Unmarshal(data, &s)
		}
		base := strings.TrimSuffix(f, ".json")
		if err != nil || !jobs.ValidID(s.Job.ID) || filepath.Base(base) != s.Job.ID {
			a.log.Warn("dropping an unreadable spooled submission", "file", f, "error", err)
			os.Remove(f)
			continue
		}
		var tar *os.File
		if s.Job.Source.Kind == "tarball" {
			if tar, err = os.Open(base + ".tar"); err != nil {
				a.log.Warn("dropping a spooled upload whose tarball is gone", "job", s.Job.ID, "error", err)
				os.Remove(f)
				continue
			}
		}
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		var r io.Reader
		if tar != nil {
			r = tar
		}
		got, err := a.broker.Submit(sctx, s.Job, r, s.Dedup...)
		cancel()
		if tar != nil {
			tar.Close()
		}
		if err != nil && a.broker.Unreachable(err) {
			return
		}
		if err != nil {
			a.log.Warn("a spooled submission could not be queued; dropping it", "job", s.Job.ID, "error", err)
		} else if got.ID != s.Job.ID {
			a.log.Info("a spooled webhook delivery was a duplicate", "job", s.Job.ID, "same_as", got.ID)
		} else {
			a.log.Info("spooled job queued", "job", got.ID)
		}
		os.Remove(base + ".tar")
		os.Remove(f)
		a.metrics.spoolChanged(a.countSpooled())
	}
}
