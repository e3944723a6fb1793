package ctrexec

import (
	"context"
	"fmt"
	"syscall"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"

	"github.com/cleanroom-ci/cleanroom/sandbox"
)

// The optional capabilities of sandbox this executor has.
var (
	_ sandbox.Preparer        = (*Executor)(nil)
	_ sandbox.NetworkProvider = (*Executor)(nil)
	_ sandbox.RuntimeResolver = (*Executor)(nil)
	_ sandbox.Puller          = (*Executor)(nil)
	_ sandbox.Signaller       = (*Executor)(nil)
	_ sandbox.ImageFileReader = (*Executor)(nil)
)

// Pull fetches ref from its registry, with the credentials auth returns
// for the registry host (a nil auth, or an empty user, means anonymous),
// and names the result <repository>@<digest>, so that what a job's stages
// run cannot change when the tag moves. The registry is asked every time,
// even for a digest already present: access to a private image must be
// proven by every job that uses it. Plain HTTP is used only for loopback
// registries.
func (e *Executor) Pull(ctx context.Context, ref string, auth func(host string) (string, string, error)) (sandbox.Image, error) {
	ctx = e.nsctx(ctx)
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return sandbox.Image{}, fmt.Errorf("image %q: %w", ref, err)
	}
	opts := []docker.RegistryOpt{docker.WithPlainHTTP(docker.MatchLocalhost)}
	if auth != nil {
		opts = append(opts, docker.WithAuthorizer(docker.NewDockerAuthorizer(docker.WithAuthCreds(auth))))
	}
	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: docker.ConfigureDefaultRegistries(opts...)})
	e.imageMu.Lock()
	defer e.imageMu.Unlock()
	e.log.Info("pulling image", "ref", named.String())
	img, err := e.client.Pull(ctx, named.String(),
		containerd.WithResolver(resolver),
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(snapshotter),
	)
	if err != nil {
		return sandbox.Image{}, fmt.Errorf("pull %s: %w", named.String(), err)
	}
	target := img.Target()
	pinned := reference.TrimNamed(named).String() + "@" + target.Digest.String()
	if pinned != img.Name() {
		is := e.client.ImageService()
		_, err := is.Create(ctx, images.Image{Name: pinned, Target: target})
		if errdefs.IsAlreadyExists(err) {
			// The name says which digest it holds; make sure it does.
			if old, gerr := is.Get(ctx, pinned); gerr == nil && old.Target.Digest != target.Digest {
				_, err = is.Update(ctx, images.Image{Name: pinned, Target: target}, "target")
			} else {
				err = nil
			}
		}
		if err != nil {
			return sandbox.Image{}, fmt.Errorf("name %s: %w", pinned, err)
		}
	}
	return sandbox.Image{Ref: ref, Name: pinned, Digest: target.Digest.String()}, nil
}

// Signal sends sig to every process of sandbox id's task. It is an error
// when there is no such task (not started yet, or already gone).
func (e *Executor) Signal(ctx context.Context, id string, sig syscall.Signal) error {
	ctx = e.nsctx(ctx)
	c, err := e.client.LoadContainer(ctx, id)
	if err != nil {
		return err
	}
	t, err := c.Task(ctx, nil)
	if err != nil {
		return err
	}
	return t.Kill(ctx, sig, containerd.WithKillAll)
}
