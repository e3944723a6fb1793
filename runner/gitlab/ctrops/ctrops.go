// Package ctrops adds to the containerd executor (sandbox/containerd) the
// two operations the GitLab driver needs and ctrexec does not offer:
// pulling an image with the job's registry credentials, pinned by digest,
// and signalling a running sandbox. It is kept apart from runner/gitlab so
// that the driver's logic imports no containerd package.
package ctrops

import (
	"context"
	"fmt"
	"sync"
	"syscall"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/hashicorp/go-hclog"

	"github.com/cleanroom-ci/cleanroom/runner/gitlab"
	"github.com/cleanroom-ci/cleanroom/sandbox"
	ctrexec "github.com/cleanroom-ci/cleanroom/sandbox/containerd"
)

// snapshotter matches ctrexec's.
const snapshotter = "overlayfs"

// Backend is a gitlab.Backend over a ctrexec.Executor.
type Backend struct {
	*ctrexec.Executor
	ns  string
	log hclog.Logger
	mu  sync.Mutex
}

var _ gitlab.Backend = (*Backend)(nil)

// New wraps an executor working in containerd namespace ns.
func New(e *ctrexec.Executor, ns string, log hclog.Logger) *Backend {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Backend{Executor: e, ns: ns, log: log}
}

func (b *Backend) nsctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, b.ns)
}

// Pull fetches ref from its registry, with the credentials auth returns
// for the registry host (a nil auth, or an empty user, means anonymous),
// and names the result <repository>@<digest>, so that what a job's stages
// run cannot change when the tag moves. The registry is asked every time,
// even for a digest already present: access to a private image must be
// proven by every job that uses it. Plain HTTP is used only for loopback
// registries.
func (b *Backend) Pull(ctx context.Context, ref string, auth func(host string) (string, string, error)) (sandbox.Image, error) {
	ctx = b.nsctx(ctx)
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return sandbox.Image{}, fmt.Errorf("image %q: %w", ref, err)
	}
	opts := []docker.RegistryOpt{docker.WithPlainHTTP(docker.MatchLocalhost)}
	if auth != nil {
		opts = append(opts, docker.WithAuthorizer(docker.NewDockerAuthorizer(docker.WithAuthCreds(auth))))
	}
	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: docker.ConfigureDefaultRegistries(opts...)})
	b.mu.Lock()
	defer b.mu.Unlock()
	b.log.Info("pulling image", "ref", named.String())
	img, err := b.Client().Pull(ctx, named.String(),
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
		is := b.Client().ImageService()
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
func (b *Backend) Signal(ctx context.Context, id string, sig syscall.Signal) error {
	ctx = b.nsctx(ctx)
	c, err := b.Client().LoadContainer(ctx, id)
	if err != nil {
		return err
	}
	t, err := c.Task(ctx, nil)
	if err != nil {
		return err
	}
	return t.Kill(ctx, sig, containerd.WithKillAll)
}
