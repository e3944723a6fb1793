package ctrexec

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"

	"github.com/cleanroom-ci/cleanroom/internal/runlock"
	"github.com/cleanroom-ci/cleanroom/sandbox"
	"github.com/cleanroom-ci/cleanroom/sandbox/userns"
)

// reap removes the containers, tasks, snapshots and leases of runs that are
// no longer alive (their run lock is free): what a runner killed with
// SIGKILL, or a crashed host daemon, left behind. Live runs are never
// touched, so concurrent runs on one host are safe.
func (e *Executor) reap(ctx context.Context) error {
	ctx = e.nsctx(ctx)
	dead := func(labels map[string]string) bool {
		if labels[sandbox.LabelManaged] != "true" {
			return false
		}
		run := labels[sandbox.LabelRun]
		return run != e.runID && !runlock.Alive(e.locksDir, run)
	}
	var errs []error

	ctrs, err := e.client.Containers(ctx, fmt.Sprintf("labels.%q==true", sandbox.LabelManaged))
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	for _, c := range ctrs {
		labels, err := c.Labels(ctx)
		if err != nil || !dead(labels) {
			continue
		}
		e.log.Info("reaping container of a dead run", "id", c.ID(), "run", labels[sandbox.LabelRun])
		if err := removeContainer(ctx, c); err != nil {
			errs = append(errs, err)
		}
	}

	// After the containers: a dead run's container may still have had
	// an idmapped mount bound.
	if err := e.reapIDMaps(); err != nil {
		errs = append(errs, err)
	}

	sn := e.client.SnapshotService(snapshotter)
	var orphans []string
	err = sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if dead(info.Labels) {
			orphans = append(orphans, info.Name)
		}
		return nil
	}, fmt.Sprintf("labels.%q==true", sandbox.LabelManaged))
	if err != nil {
		errs = append(errs, fmt.Errorf("walk snapshots: %w", err))
	}
	for _, name := range orphans {
		e.log.Info("reaping snapshot of a dead run", "key", name)
		if err := sn.Remove(ctx, name); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove snapshot %s: %w", name, err))
		}
	}

	ls := e.client.LeasesService()
	all, err := ls.List(ctx, fmt.Sprintf("labels.%q==true", sandbox.LabelManaged))
	if err != nil {
		errs = append(errs, fmt.Errorf("list leases: %w", err))
	}
	for _, l := range all {
		if dead(l.Labels) {
			if err := ls.Delete(ctx, l, leases.SynchronousDelete); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("delete lease %s: %w", l.ID, err))
			}
		}
	}
	return errors.Join(errs...)
}

func removeContainer(ctx context.Context, c containerd.Container) error {
	ctx, cancel := context.WithTimeout(ctx, teardownTimeout)
	defer cancel()
	if task, err := c.Task(ctx, nil); err == nil {
		if st, err := task.Status(ctx); err == nil && st.Status != containerd.Stopped {
			waitc, werr := task.Wait(ctx)
			task.Kill(ctx, syscall.SIGKILL, containerd.WithKillAll)
			if werr == nil {
				select {
				case <-waitc:
				case <-time.After(10 * time.Second):
				}
			}
		}
		_, err := task.Delete(ctx)
		if errdefs.IsFailedPrecondition(err) {
			_, err = task.Delete(ctx, containerd.WithProcessKill)
		}
		if err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete task %s: %w", c.ID(), err)
		}
	}
	if err := c.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete container %s: %w", c.ID(), err)
	}
	return nil
}

// reapIDMaps detaches the idmapped mounts that dead runs left under
// <state>/idmap (see idmapRunDir) and removes their mount points. Each is a
// writable view of a user's tree, left there by a run that died before its
// teardown: a later `rm -rf` of the state directory would go through it.
// Nothing is removed recursively: a directory is removed only once empty,
// and a mount point that stays mounted stays, with an error.
func (e *Executor) reapIDMaps() error {
	root := filepath.Join(e.stateDir, "idmap")
	runs, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list idmapped mounts: %w", err)
	}
	var errs []error
	for _, r := range runs {
		run := r.Name()
		if run == e.runID || strings.HasPrefix(run, "_") || runlock.Alive(e.locksDir, run) {
			continue
		}
		dir := filepath.Join(root, run)
		boxes, err := os.ReadDir(dir)
		if err != nil {
			errs = append(errs, fmt.Errorf("list idmapped mounts: %w", err))
			continue
		}
		for _, b := range boxes {
			box := filepath.Join(dir, b.Name())
			mounts, err := os.ReadDir(box)
			if err != nil {
				errs = append(errs, fmt.Errorf("list idmapped mounts: %w", err))
				continue
			}
			for _, m := range mounts {
				path := filepath.Join(box, m.Name())
				e.log.Info("reaping an idmapped mount of a dead run", "path", path, "run", run)
				if err := userns.Unmount(path); err != nil {
					errs = append(errs, err)
				}
			}
			if err := os.Remove(box); err != nil {
				errs = append(errs, fmt.Errorf("remove %s: %w", box, err))
			}
		}
		if err := os.Remove(dir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}
