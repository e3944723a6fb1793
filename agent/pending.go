package agent

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/cleanroom-ci/cleanroom/agent/forge"
	"github.com/cleanroom-ci/cleanroom/agent/jobs"
	"github.com/cleanroom-ci/cleanroom/internal/exitcode"
)

// A finished run's result is recorded in NATS (outputs stored, state
// written, log ended, delivery acknowledged) by settle. When NATS is
// unreachable the result waits on this agent's disk, in the job's
// directory, and is recorded once NATS is back, also after a restart: a
// finished build is never run again because the queue was down when it
// ended. Meanwhile this agent's presence lists the job, so that another
// agent finding its lease expired waits instead of calling it lost.

// pendingResult is what is kept of a run until it is recorded; it is
// written to pendingFile in the job's directory.
type pendingResult struct {
	ID      string `json:"id"`
	Attempt int    `json:"attempt"`
	// HandBack: the run was stopped because NATS was unreachable; the
	// attempt goes back to the queue, uncounted.
	HandBack bool         `json:"handBack,omitempty"`
	Commit   string       `json:"commit,omitempty"`
	Started  time.Time    `json:"started"`
	Finished time.Time    `json:"finished"`
	State    string       `json:"state,omitempty"`
	ExitCode int          `json:"exitCode"`
	Error    string       `json:"error,omitempty"`
	Cause    string       `json:"cause,omitempty"`
	Result   *jobs.Result `json:"result,omitempty"`
	LogLost  bool         `json:"logLost,omitempty"`
}

const pendingFile = "pending.json"

// pendingEntry is a result waiting here, with the latest delivery of its
// job (nil until one arrives after a restart).
type pendingEntry struct {
	mu sync.Mutex
	p  pendingResult
	d  *jobs.Delivery
}

// keep records a run's result now if NATS answers, else keeps it for the
// keepalive loop.
func (a *Agent) keep(p pendingResult, d *jobs.Delivery) {
	dir := a.jobDir(p.ID)
	if p.HandBack {
		os.RemoveAll(dir) // nothing of a stopped run is kept but the record
	}
	if err := os.MkdirAll(dir, 0o700); err == nil {
		data, _ := json.Marshal(p)
		if err := os.WriteFile(filepath.Join(dir, pendingFile), data, 0o600); err != nil {
			a.log.Warn("keeping the job's result on disk failed", "job", p.ID, "error", err)
		}
	}
	e := &pendingEntry{p: p, d: d}
	a.pending.Store(p.ID, e)
	a.metrics.pendingChanged(a.countPending())
	if err := a.settleEntry(e); err != nil {
		a.log.Warn("NATS unreachable: the job's result is kept on this agent and recorded when NATS is back", "job", p.ID, "error", err)
	}
}

// adoptDelivery gives a pending result the latest delivery of its job,
// reporting whether the job's result waits here.
func (a *Agent) adoptDelivery(id string, d *jobs.Delivery) bool {
	v, ok := a.pending.Load(id)
	if !ok {
		return false
	}
	e := v.(*pendingEntry)
	e.mu.Lock()
	e.d = d
	e.mu.Unlock()
	return true
}

func (a *Agent) countPending() int {
	n := 0
	a.pending.Range(func(any, any) bool { n++; return true })
	return n
}

// settleEntry tries to record one pending result, bounded in time; on
// success (or when the job is no longer this agent's) the entry and its
// directory are removed.
func (a *Agent) settleEntry(e *pendingEntry) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := a.pending.Load(e.p.ID); !ok {
		return nil // settled meanwhile
	}
	ctx, cancel := context.WithTimeout(a.bg, 20*time.Second)
	defer cancel()
	err := a.settle(ctx, e.p, e.d)
	if err != nil && a.broker.Unreachable(err) {
		return err
	}
	if err != nil {
		a.log.Warn("recording the job's end failed; dropping this agent's result", "job", e.p.ID, "error", err)
	}
	os.RemoveAll(a.jobDir(e.p.ID))
	a.pending.Delete(e.p.ID)
	a.metrics.pendingChanged(a.countPending())
	return nil
}

// settle records a result in NATS. Every step may be repeated.
func (a *Agent) settle(ctx context.Context, p pendingResult, d *jobs.Delivery) error {
	if p.HandBack {
		err := a.handBack(d, jobs.Job{ID: p.ID, Attempt: p.Attempt}, time.Now().UTC(), "NATS was unreachable for longer than ack_wait on agent "+a.id)
		if errors.Is(err, errLeaseLost) {
			return nil // another agent took the job over meanwhile
		}
		return err
	}
	dir := a.jobDir(p.ID)
	outs, err := a.storeOutputs(ctx, p.ID, filepath.Join(dir, "out"), filepath.Join(dir, "src"), p.Result)
	if err != nil {
		if a.broker.Unreachable(err) {
			return err
		}
		a.log.Warn("storing outputs failed", "job", p.ID, "error", err)
		if p.State == jobs.StateSucceeded {
			p.State, p.ExitCode, p.Error, p.Cause = jobs.StateError, exitcode.SystemFailure, "storing outputs: "+err.Error(), jobs.CauseInfrastructure
		}
	}
	// The kept log is the whole job's, earlier attempts included (they
	// may have run on another agent); this attempt's own copy is used
	// when part of it could not be published.
	logPath := filepath.Join(dir, "job.log")
	if !p.LogLost {
		f, err := os.Create(filepath.Join(dir, "whole.log"))
		if err == nil {
			err = a.broker.ReadLog(ctx, p.ID, f)
			f.Close()
			if err == nil {
				logPath = f.Name()
			} else if a.broker.Unreachable(err) {
				return err
			}
		}
	}
	o, err := a.storeFile(ctx, p.ID, "job.log", logPath)
	if err != nil && a.broker.Unreachable(err) {
		return err
	}
	if err == nil {
		outs = append(outs, o)
	}
	final, err := a.broker.Update(ctx, p.ID, func(j *jobs.Job) error {
		if j.Agent != a.id || j.Attempt != p.Attempt {
			return errLeaseLost
		}
		j.State, j.ExitCode, j.Error, j.Cause = p.State, p.ExitCode, p.Error, p.Cause
		if p.State == jobs.StateCancelled {
			j.Error = cancelledMessage(*j)
		}
		j.Finished, j.Agent, j.LeaseUntil = p.Finished, "", time.Time{}
		j.Source.Commit = orDefault(p.Commit, j.Source.Commit)
		j.Result, j.Outputs = p.Result, outs
		endAttempt(j, p.Finished, p.State)
		return nil
	})
	if errors.Is(err, errLeaseLost) {
		a.log.Warn("the job was taken over by another agent before its result could be recorded", "job", p.ID)
		return nil
	}
	if err != nil {
		return err
	}
	a.metrics.finished(final)
	a.broker.EndLog(ctx, p.ID, final.State)
	a.releaseSlot(ctx, final)
	if d != nil {
		// Bounded: the state is final, so a delivery left unacknowledged
		// is only settled when it comes back (claim).
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := d.Done(actx)
		cancel()
		if err != nil {
			a.log.Warn("acknowledging the job failed; its state is final, so a redelivery will only be settled", "job", p.ID, "error", err)
		}
	}
	a.reportStatus(final)
	a.log.Info("job finished", "job", p.ID, "attempt", p.Attempt, "state", final.State, "exit", final.ExitCode, "duration", p.Finished.Sub(p.Started).Round(time.Millisecond))
	return nil
}

// holderAlive says why a job whose lease expired should not be taken
// from its agent yet, or "" if the agent is lost. A lease also expires
// when NATS itself was unreachable: then every agent was cut off, and
// the job's agent needs a moment after NATS is back to report.
func (a *Agent) holderAlive(ctx context.Context, j jobs.Job) string {
	grace := 2 * a.broker.AckWait()
	if a.broker.SinceOutage() < grace {
		return "this agent was cut off from NATS too, moments ago: the queue was unreachable, not necessarily the agent"
	}
	// A connected agent writes its presence every third of ack_wait: one
	// older than ack_wait is an agent gone or cut off.
	p, err := a.broker.GetPresence(ctx, j.Agent)
	if err == nil && time.Since(p.Updated) < a.broker.AckWait() && slices.Contains(p.Jobs, j.ID) {
		return "agent " + j.Agent + " is alive and holds the job"
	}
	return ""
}

// keepalive publishes this agent's presence every third of ack_wait and
// right after NATS comes back, and records pending results then.
func (a *Agent) keepalive(ctx context.Context) {
	every := a.broker.AckWait() / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		var held []string
		a.running.Range(func(k, _ any) bool { held = append(held, k.(string)); return true })
		a.pending.Range(func(k, _ any) bool { held = append(held, k.(string)); return true })
		pctx, cancel := context.WithTimeout(ctx, every)
		a.broker.PutPresence(pctx, jobs.Presence{Agent: a.id, Jobs: held})
		cancel()
		if a.broker.Connected() {
			a.flushSpool(ctx)
			a.pending.Range(func(_, v any) bool {
				e := v.(*pendingEntry)
				if e.mu.TryLock() { // else being settled by its own run
					e.mu.Unlock()
					a.settleEntry(e)
				}
				return ctx.Err() == nil
			})
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.broker.Reconnected():
		}
	}
}

// restoreJobDirs runs at start, before any job: a job directory with a
// pending result is taken up again; any other is what a killed agent's
// run left behind, and is removed (its job is run again or failed by the
// loss policy, wherever it runs next). Spooled uploads are left to the
// submission spool; scratch copies of uploads are removed.
func (a *Agent) restoreJobDirs() {
	root := filepath.Join(a.cfg.DataDir, "jobs")
	ents, _ := os.ReadDir(root)
	for _, ent := range ents {
		dir := filepath.Join(root, ent.Name())
		data, err := os.ReadFile(filepath.Join(dir, pendingFile))
		var p pendingResult
		if err == nil && json.Unmarshal(data, &p) == nil && p.ID == ent.Name() && jobs.ValidID(p.ID) {
			a.pending.Store(p.ID, &pendingEntry{p: p})
			a.log.Info("a finished job's result waits to be recorded", "job", p.ID, "attempt", p.Attempt)
			continue
		}
		if err := os.RemoveAll(dir); err == nil {
			a.log.Info("removed the workspace of a run this agent lost", "job", ent.Name())
		}
	}
	uploads, _ := filepath.Glob(filepath.Join(a.cfg.DataDir, "uploads", "*"))
	for _, u := range uploads {
		os.RemoveAll(u)
	}
	a.metrics.pendingChanged(a.countPending())
	a.metrics.spoolChanged(a.countSpooled())
}

// reportStatus sets the commit status of a webhook's job on its forge,
// when the hook has a status reporter. It is bounded and never fails the
// job: a forge that is down loses a status, not a build.
func (a *Agent) reportStatus(j jobs.Job) {
	if j.Trigger.Hook == "" || j.Source.Commit == "" {
		return
	}
	var rep *forge.Reporter
	for _, w := range a.cfg.Webhooks {
		if w.Name == j.Trigger.Hook {
			rep = w.Status
		}
	}
	if rep == nil {
		return
	}
	state, desc := forge.Running, "running on "+a.id
	switch j.State {
	case jobs.StateSucceeded:
		state, desc = forge.Success, "succeeded"
	case jobs.StateFailed:
		state, desc = forge.Failure, "failed"
		if j.Result != nil && j.Result.FailedStep != "" {
			desc = "step " + j.Result.FailedStep + " failed"
		}
	case jobs.StateCancelled:
		state, desc = forge.Cancel, "cancelled"
	case jobs.StateError:
		state, desc = forge.Error, "error: "+j.Error
	}
	target := ""
	if a.cfg.URL != "" {
		target = a.cfg.URL + "/jobs/" + j.ID
	}
	// The start's status holds the job up (it must reach the forge before
	// the end's): a short bound; the end's may take longer.
	bound := 15 * time.Second
	if state == forge.Running {
		bound = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(a.bg, bound)
	defer cancel()
	if err := rep.Post(ctx, j.Source.Commit, state, target, desc); err != nil {
		a.log.Warn("reporting the commit status failed", "job", j.ID, "hook", j.Trigger.Hook, "state", state, "error", err)
		a.metrics.statusPosted(j.Trigger.Hook, false)
		return
	}
	a.metrics.statusPosted(j.Trigger.Hook, true)
}
