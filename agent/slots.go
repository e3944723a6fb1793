package agent

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/cleanroom-ci/cleanroom/agent/jobs"
	"github.com/cleanroom-ci/cleanroom/agent/webhook"
)

// jobs.repository_concurrency bounds how many jobs of one repository run
// at once across all agents: a busy repository cannot take every agent.
// The holders of a repository's slots are one record in the state bucket,
// changed by compare-and-set like a job's state. A holder whose job is
// finished, or has not been running for a while (its agent lost it, or
// handed it back), is dropped when the slots are full, so a lost agent
// never keeps a slot.

func slotRepository(j jobs.Job) string {
	if j.Source.Kind != "git" {
		return ""
	}
	n, err := webhook.NormalizeRepo(j.Source.Repository)
	if err != nil {
		return j.Source.Repository
	}
	return n
}

// acquireSlot takes a run slot of the job's repository, reporting
// whether the job may run now.
func (a *Agent) acquireSlot(ctx context.Context, j jobs.Job) (bool, error) {
	limit, repo := a.cfg.RepositoryConcurrency, slotRepository(j)
	if limit <= 0 || repo == "" {
		return true, nil
	}
	for {
		hs, rev, err := a.broker.Slots(ctx, repo)
		if err != nil {
			return false, err
		}
		if slices.ContainsFunc(hs, func(h jobs.SlotHolder) bool { return h.Job == j.ID }) {
			return true, nil
		}
		if len(hs) >= limit {
			hs = a.pruneSlots(ctx, hs)
		}
		if len(hs) >= limit {
			return false, nil
		}
		hs = append(hs, jobs.SlotHolder{Job: j.ID, Since: time.Now().UTC()})
		if err := a.broker.PutSlots(ctx, repo, hs, rev); errors.Is(err, jobs.ErrConflict) {
			continue
		} else if err != nil {
			return false, err
		}
		return true, nil
	}
}

// pruneSlots keeps the holders whose jobs still run (or were claimed a
// moment ago and are about to).
func (a *Agent) pruneSlots(ctx context.Context, hs []jobs.SlotHolder) []jobs.SlotHolder {
	var keep []jobs.SlotHolder
	for _, h := range hs {
		j, _, err := a.broker.Get(ctx, h.Job)
		switch {
		case errors.Is(err, jobs.ErrNotFound):
		case err != nil:
			keep = append(keep, h) // unknown: keep it
		case j.State == jobs.StateRunning:
			keep = append(keep, h)
		case !jobs.Terminal(j.State) && time.Since(h.Since) < a.broker.AckWait():
			keep = append(keep, h)
		}
	}
	return keep
}

// releaseSlot gives a finished job's slot back.
func (a *Agent) releaseSlot(ctx context.Context, j jobs.Job) {
	repo := slotRepository(j)
	if a.cfg.RepositoryConcurrency <= 0 || repo == "" {
		return
	}
	for {
		hs, rev, err := a.broker.Slots(ctx, repo)
		if err != nil || rev == 0 {
			return
		}
		i := slices.IndexFunc(hs, func(h jobs.SlotHolder) bool { return h.Job == j.ID })
		if i < 0 {
			return
		}
		hs = slices.Delete(hs, i, i+1)
		if err := a.broker.PutSlots(ctx, repo, hs, rev); !errors.Is(err, jobs.ErrConflict) {
			return
		}
	}
}
