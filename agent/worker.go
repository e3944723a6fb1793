package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cleanroom-ci/cleanroom/agent/jobs"
	"github.com/cleanroom-ci/cleanroom/internal/exitcode"
)

// work pulls jobs while ctx lives, never holding more than Concurrency.
// Jobs run under a.jobsCtx, which outlives ctx by the drain grace.
func (a *Agent) work(ctx context.Context) {
	for {
		select {
		case a.slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		d, err := a.broker.Next(ctx, 5*time.Second)
		if d == nil {
			<-a.slots
			if err != nil && ctx.Err() == nil {
				a.log.Warn("fetching jobs failed; retrying", "error", err)
				select {
				case <-time.After(time.Second):
				case <-ctx.Done():
				}
			}
			continue
		}
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			defer func() { <-a.slots }()
			a.handle(d)
		}()
	}
}

// claim takes the job of a delivery for this agent by compare-and-set on
// its state, or settles the delivery when there is nothing to run. It
// returns the claimed job, or nil.
func (a *Agent) claim(ctx context.Context, d *jobs.Delivery) (*jobs.Job, error) {
	for {
		j, rev, err := a.broker.Get(ctx, d.ID)
		if errors.Is(err, jobs.ErrNotFound) {
			a.log.Warn("queued job has no state; dropping it", "job", d.ID)
			return nil, d.Done(ctx)
		}
		if err != nil {
			d.Retry(5 * time.Second)
			return nil, err
		}
		now := time.Now().UTC()
		switch {
		case jobs.Terminal(j.State):
			// Finished by an agent whose ack was lost: never run twice.
			return nil, d.Done(ctx)
		case j.CancelRequested:
			j.State, j.Finished, j.Error, j.ExitCode = jobs.StateCancelled, now, cancelledMessage(j), exitcode.SystemFailure
			if _, err := a.broker.Put(ctx, j, rev); errors.Is(err, jobs.ErrConflict) {
				continue
			} else if err != nil {
				return nil, err
			}
			a.broker.EndLog(ctx, j.ID, j.State)
			a.metrics.finished(j)
			a.reportStatus(j)
			return nil, d.Done(ctx)
		case j.State == jobs.StateRunning:
			_, mine := a.running.Load(j.ID)
			if mine {
				return nil, nil // a duplicate delivery of a job this agent runs
			}
			if a.adoptDelivery(j.ID, d) {
				return nil, nil // its result waits here to be recorded
			}
			if j.Agent != a.id && now.Before(j.LeaseUntil) {
				// Its agent is alive and heartbeating: leave it there.
				return nil, d.Retry(time.Until(j.LeaseUntil) + time.Second)
			}
			if j.Agent != a.id {
				if why := a.holderAlive(ctx, j); why != "" {
					a.log.Info("lease expired but the job's agent is not lost: waiting", "job", j.ID, "holder", j.Agent, "why", why)
					return nil, d.Retry(a.broker.AckWait())
				}
			}
			a.metrics.lost()
			// The agent that ran it is gone (or is this one, restarted).
			lost := fmt.Sprintf("agent %s was lost while running attempt %d", j.Agent, j.Attempt)
			endAttempt(&j, now, "lost: "+lost)
			if a.cfg.OnAgentLoss == OnLossFail || j.Attempt >= a.cfg.MaxAttempts {
				j.State, j.Finished, j.ExitCode, j.Cause = jobs.StateError, now, exitcode.SystemFailure, jobs.CauseInfrastructure
				j.Error = lost + "; not retried (jobs.on_agent_loss: " + a.cfg.OnAgentLoss + fmt.Sprintf(", max_attempts: %d)", a.cfg.MaxAttempts)
				j.Agent, j.LeaseUntil = "", time.Time{}
				if _, err := a.broker.Put(ctx, j, rev); errors.Is(err, jobs.ErrConflict) {
					continue
				} else if err != nil {
					return nil, err
				}
				a.broker.AppendLog(ctx, j.ID, []byte("cleanroom agent: "+j.Error+"\n"))
				a.broker.EndLog(ctx, j.ID, j.State)
				a.metrics.finished(j)
				a.reportStatus(j)
				return nil, d.Done(ctx)
			}
			a.log.Warn("retrying a job whose agent was lost", "job", j.ID, "lost_agent", j.Agent, "attempt", j.Attempt+1)
			a.metrics.retried()
		}
		if ok, err := a.acquireSlot(ctx, j); err != nil {
			d.Retry(5 * time.Second)
			return nil, err
		} else if !ok {
			// Its repository's slots are taken: leave it queued.
			return nil, d.Retry(max(a.broker.AckWait()/3, time.Second))
		}
		queuedSince := j.Created
		if n := len(j.History); n > 0 && !j.History[n-1].Finished.IsZero() {
			queuedSince = j.History[n-1].Finished
		}
		j.State, j.Agent = jobs.StateRunning, a.id
		j.Attempt++
		j.LeaseUntil = now.Add(a.broker.AckWait())
		if j.Started.IsZero() {
			j.Started = now
		}
		j.History = append(j.History, jobs.Attempt{N: j.Attempt, Agent: a.id, Started: now})
		if _, err := a.broker.Put(ctx, j, rev); errors.Is(err, jobs.ErrConflict) {
			continue
		} else if err != nil {
			return nil, err
		}
		a.metrics.waited(now.Sub(queuedSince))
		return &j, nil
	}
}

func endAttempt(j *jobs.Job, now time.Time, outcome string) {
	if n := len(j.History); n > 0 && j.History[n-1].Outcome == "" {
		j.History[n-1].Finished, j.History[n-1].Outcome = now, outcome
	}
}

func cancelledMessage(j jobs.Job) string {
	if j.CancelledBy != "" {
		return "cancelled by " + j.CancelledBy
	}
	return "cancelled"
}

// running is a job this agent is working on.
type running struct {
	job    jobs.Job
	cancel context.CancelCauseFunc
}

// Causes of a run's end other than its own exit.
var (
	errCancelRequested = errors.New("cancel requested")
	errLeaseLost       = errors.New("another agent took the job over")
	errDraining        = errors.New("agent draining: job handed back")
	errJobTimeout      = errors.New("job timeout")
	// errQueueUnreachable: the lease ran out without a heartbeat reaching
	// NATS, so another agent may take the job over.
	errQueueUnreachable = errors.New("NATS unreachable for longer than ack_wait")
)

// handle runs one delivered job to a terminal state, or hands it back.
func (a *Agent) handle(d *jobs.Delivery) {
	ctx := a.jobsCtx
	jp, err := a.claim(ctx, d)
	if err != nil {
		a.log.Warn("claiming a job failed", "job", d.ID, "error", err)
	}
	if jp == nil {
		return
	}
	job := *jp
	log := a.log.With("job", job.ID, "attempt", job.Attempt)
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	runCtx, cancelTimeout := context.WithTimeoutCause(runCtx, a.cfg.JobTimeout, errJobTimeout)
	defer cancelTimeout()
	a.running.Store(job.ID, &running{job: job, cancel: cancel})
	defer a.running.Delete(job.ID)
	a.metrics.started()

	hb := a.heartbeat(runCtx, d, job, cancel)
	defer hb()

	log.Info("running job", "source", job.Source.Kind, "pipeline", job.Pipeline)
	a.reportStatus(job)
	out := a.run(runCtx, &job)
	// Not running any more, whether or not its result is recorded yet
	// (results_pending counts those).
	a.metrics.stopped()

	cause := out.stop
	now := time.Now().UTC()
	switch {
	case errors.Is(cause, errLeaseLost):
		// Not ours any more: write nothing, ack nothing.
		os.RemoveAll(a.jobDir(job.ID))
		log.Warn("job taken over by another agent; this run was stopped")
		return
	case errors.Is(cause, errDraining):
		os.RemoveAll(a.jobDir(job.ID))
		a.handBack(d, job, now, "agent "+a.id+" stopped (drain grace exceeded)")
		log.Info("job handed back to the queue (agent draining)")
		return
	case errors.Is(cause, errQueueUnreachable):
		// The run was stopped so that two runs never overlap for long;
		// the attempt is handed back, uncounted, once NATS is back.
		a.keep(pendingResult{ID: job.ID, Attempt: job.Attempt, HandBack: true}, d)
		log.Warn("NATS unreachable for longer than ack_wait: run stopped; the job goes back to the queue when NATS is back")
		return
	}
	state, errMsg, cause2 := out.state, out.err, ""
	if state == jobs.StateError {
		cause2 = orDefault(out.cause, jobs.CauseInfrastructure)
	}
	p := pendingResult{ID: job.ID, Attempt: job.Attempt, Commit: job.Source.Commit, Started: job.History[len(job.History)-1].Started, Finished: now,
		State: state, ExitCode: out.exitCode, Error: errMsg, Cause: cause2, Result: out.result, LogLost: out.logLost}
	a.keep(p, d)
}

// handBack returns a job to the queue when the agent cannot finish it
// (draining past its grace period): the attempt does not count against
// max_attempts.
func (a *Agent) handBack(d *jobs.Delivery, job jobs.Job, now time.Time, why string) error {
	_, err := a.broker.Update(a.bg, job.ID, func(j *jobs.Job) error {
		if j.Agent != a.id || j.Attempt != job.Attempt {
			return errLeaseLost
		}
		endAttempt(j, now, "handed back: "+why+"; this attempt is not counted")
		j.State, j.Agent, j.LeaseUntil = jobs.StateQueued, "", time.Time{}
		j.Attempt--
		return nil
	})
	if err == nil {
		a.metrics.handedBack(why)
		a.broker.AppendLog(a.bg, job.ID, []byte("cleanroom agent: "+why+"; the job goes back to the queue\n"))
		if d != nil {
			d.Retry(0)
		}
	}
	return err
}

// heartbeat keeps the job's delivery and lease alive while it runs, and
// stops the run when the job is cancelled or taken over. The returned
// function stops the heartbeat.
func (a *Agent) heartbeat(ctx context.Context, d *jobs.Delivery, job jobs.Job, cancel context.CancelCauseFunc) func() {
	hctx, stop := context.WithCancel(ctx)
	every := a.broker.AckWait() / 3
	watch, err := a.broker.Watch(hctx, job.ID)
	if err != nil {
		a.log.Warn("watching the job for cancellation failed; relying on the heartbeat", "job", job.ID, "error", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// renewed is when the lease was last extended. An agent cut off
		// from NATS cannot tell whether another agent has taken the job
		// over once its lease has run out, so it stops the run then: two
		// runs of one job overlap by at most one heartbeat interval.
		renewed := time.Now()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case j, ok := <-watch:
				if !ok {
					watch = nil
					continue
				}
				if j.CancelRequested {
					cancel(errCancelRequested)
				}
				if j.Agent != a.id || j.Attempt != job.Attempt {
					cancel(errLeaseLost)
				}
			case <-t.C:
				if time.Since(renewed) >= a.broker.AckWait() {
					a.log.Warn("lease expired without a heartbeat reaching NATS: stopping the run, another agent may take the job", "job", job.ID)
					cancel(errQueueUnreachable)
					return
				}
				d.InProgress()
				// Bounded: a heartbeat that cannot reach NATS must not
				// hold up the next check of the lease.
				uctx, ucancel := context.WithTimeout(hctx, every)
				_, err := a.broker.Update(uctx, job.ID, func(j *jobs.Job) error {
					if j.Agent != a.id || j.Attempt != job.Attempt {
						return errLeaseLost
					}
					if j.CancelRequested {
						cancel(errCancelRequested)
					}
					j.LeaseUntil = time.Now().UTC().Add(a.broker.AckWait())
					return nil
				})
				ucancel()
				switch {
				case err == nil:
					renewed = time.Now()
				case errors.Is(err, errLeaseLost):
					cancel(errLeaseLost)
				case hctx.Err() == nil:
					a.log.Warn("heartbeat failed", "job", job.ID, "error", err)
				}
			}
		}
	}()
	return func() { stop(); <-done }
}

// jobDir is where a job's source and outputs live while it runs here.
func (a *Agent) jobDir(id string) string { return filepath.Join(a.cfg.DataDir, "jobs", id) }

// logPublisher sends a job's log to the live log stream in chunks (a
// flush every 200 ms or 16 KiB) and keeps a copy on disk.
type logPublisher struct {
	ctx   context.Context
	a     *Agent
	id    string
	file  *os.File
	ch    chan []byte
	done  chan struct{}
	masks []string
	// lost is set when a chunk could not be published.
	lost atomic.Bool
}

func (a *Agent) newLog(id, path string) (*logPublisher, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	l := &logPublisher{ctx: a.bg, a: a, id: id, file: f, ch: make(chan []byte, 256), done: make(chan struct{})}
	go l.loop()
	return l, nil
}

func (l *logPublisher) Write(p []byte) (int, error) {
	l.ch <- append([]byte(nil), p...)
	return len(p), nil
}

func (l *logPublisher) Printf(format string, args ...any) {
	fmt.Fprintf(l, "cleanroom agent: "+format+"\n", args...)
}

func (l *logPublisher) loop() {
	defer close(l.done)
	var buf []byte
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	flush := func() {
		if len(buf) == 0 {
			return
		}
		l.file.Write(buf)
		if err := l.publish(buf); err != nil {
			l.lost.Store(true)
			l.a.log.Warn("publishing log failed", "job", l.id, "error", err)
		}
		buf = nil
	}
	for {
		select {
		case p, ok := <-l.ch:
			if !ok {
				flush()
				return
			}
			buf = append(buf, p...)
			if len(buf) >= 16<<10 {
				flush()
			}
		case <-t.C:
			flush()
		}
	}
}

// publish sends one chunk, bounded: a live log must not hold up the run
// when NATS is unreachable (the agent's copy on disk is complete).
func (l *logPublisher) publish(p []byte) error {
	ctx, cancel := context.WithTimeout(l.ctx, 5*time.Second)
	defer cancel()
	return l.a.broker.AppendLog(ctx, l.id, p)
}

// Close flushes the log and returns its path.
func (l *logPublisher) Close() string {
	close(l.ch)
	<-l.done
	l.file.Close()
	return l.file.Name()
}

var _ io.Writer = (*logPublisher)(nil)

// safeRel cleans a path that must stay inside a directory: no absolute
// path, no "..".
func safeRel(p string) (string, error) {
	c := filepath.Clean(p)
	if p == "" || filepath.IsAbs(p) || c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("%q must be a relative path inside the source", p)
	}
	return c, nil
}
