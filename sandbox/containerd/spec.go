package ctrexec

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/sirupsen/logrus"

	containerd "github.com/containerd/containerd/v2/client"

	"github.com/cleanroom-ci/cleanroom/sandbox"
)

// Capabilities is the whole capability set of a step. A build runs as root
// in its container so that package managers and `chown` work, but with only
// what file ownership needs. Left out on purpose, with what each would allow:
// NET_RAW (raw sockets, spoofing), NET_ADMIN (reconfigure lo, add routes),
// SYS_ADMIN (mount, namespaces: escape the proxy), SYS_PTRACE (read other
// processes' memory), SYS_MODULE, SYS_RAWIO, SYS_TIME, DAC_READ_SEARCH
// (open_by_handle_at host escapes), MKNOD (block devices), SYS_CHROOT,
// SETPCAP, SETFCAP (plant file capabilities), AUDIT_WRITE, NET_BIND_SERVICE.
var Capabilities = []string{
	"CAP_CHOWN",
	"CAP_DAC_OVERRIDE",
	"CAP_FOWNER",
	"CAP_FSETID",
	"CAP_KILL",
	"CAP_SETGID",
	"CAP_SETUID",
}

// cpuPeriod is the CFS period; the quota is cpus × period.
const cpuPeriod = 100_000

// specOpts returns the OCI spec of a step, as a readable list of what each
// step gets. Order matters: capabilities before seccomp (the default profile
// derives its allowances from the capabilities), image config before the
// overrides of args, env and cwd.
func specOpts(img containerd.Image, s sandbox.Spec, nw *network, rt string) []oci.SpecOpts {
	opts := []oci.SpecOpts{
		oci.WithImageConfig(img),
		withArgs(img, s),
		oci.WithEnv(s.Env),
		withDefaultPath,
		withCwd(s.Cwd),
		oci.WithHostname(hostname(s)),
		// Integrity of the toolchain: a step cannot change the image it
		// runs on; what it writes goes to /tmp or the workspace.
		oci.WithRootFSReadonly(),
		// setuid binaries and file capabilities cannot raise privileges.
		oci.WithNoNewPrivileges,
		oci.WithCapabilities(Capabilities),
		withNoInheritableCaps,
		// Blocks kernel interfaces a build never needs (keyctl, bpf,
		// userfaultfd, io_uring, new mount API, …): less kernel to attack.
		seccomp.WithDefaultProfile(),
		oci.WithMounts(mounts(s)),
		withRlimits,
	}
	if s.ImageVolumes {
		opts = append(opts, withImageVolumes(img, s))
	}
	opts = append(opts, limitOpts(s.Limits)...)
	if rt == RuntimeCrun || os.Getenv(benchOCIBinaryEnv) != "" {
		// crun 1.8 (Debian's) refuses a spec version that does not contain
		// "1.0", although the spec uses nothing newer; the benchmarks'
		// crun behind the runc shim (benchRuntimeOptions) is the same.
		opts = append(opts, withOCIVersion("1.0.2"))
	}
	if nw != nil {
		opts = append(opts, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: nw.ns.Path()}))
		if nw.slot != nil {
			opts = append(opts, withJoinedUserNS(nw.ns.UserPath(), nw.slot.Range))
		}
	}
	// Last: the environment it may reverse is the final one.
	opts = append(opts, withVariation(s.Vary))
	return opts
}

// tmpfsOptions bound a writable tmpfs. Its pages are charged to the
// step's memory cgroup: a /tmp as large as the memory limit turns "disk
// full" into an OOM kill. Half the memory (Docker's default for tmpfs)
// makes filling /tmp fail with ENOSPC, which builds handle.
func tmpfsOptions(s sandbox.Spec) []string {
	tmpSize := s.Limits.TmpBytes
	if tmpSize <= 0 {
		tmpSize = s.Limits.MemoryBytes / 2
	}
	tmpOpts := []string{"nosuid", "nodev", "mode=1777"}
	if tmpSize > 0 {
		tmpOpts = append(tmpOpts, fmt.Sprintf("size=%d", tmpSize))
	}
	return tmpOpts
}

// withImageVolumes mounts a tmpfs on each volume the image declares
// (after the spec's own mounts, which win: a bind on the same path stays).
func withImageVolumes(img containerd.Image, s sandbox.Spec) oci.SpecOpts {
	return func(ctx context.Context, _ oci.Client, _ *containers.Container, sp *oci.Spec) error {
		ic, err := img.Spec(ctx)
		if err != nil {
			return err
		}
		taken := map[string]bool{}
		for _, m := range sp.Mounts {
			taken[m.Destination] = true
		}
		vols := make([]string, 0, len(ic.Config.Volumes))
		for v := range ic.Config.Volumes {
			vols = append(vols, v)
		}
		slices.Sort(vols)
		for _, v := range vols {
			if !strings.HasPrefix(v, "/") || taken[v] {
				continue
			}
			sp.Mounts = append(sp.Mounts, specs.Mount{Destination: v, Type: "tmpfs", Source: "tmpfs", Options: tmpfsOptions(s)})
		}
		return nil
	}
}

func mounts(s sandbox.Spec) []specs.Mount {
	ms := []specs.Mount{{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: tmpfsOptions(s)}}
	for _, m := range s.Mounts {
		o := []string{"rbind", "nosuid", "nodev", "rprivate"}
		if m.ReadOnly {
			o = append(o, "ro")
		} else {
			o = append(o, "rw")
		}
		ms = append(ms, specs.Mount{Destination: m.Destination, Type: "bind", Source: m.Source, Options: o})
	}
	return ms
}

func limitOpts(l sandbox.Limits) []oci.SpecOpts {
	var opts []oci.SpecOpts
	if l.MemoryBytes > 0 {
		// Swap equal to memory means no swap at all: a memory bomb is
		// killed instead of grinding the host.
		opts = append(opts, oci.WithMemoryLimit(uint64(l.MemoryBytes)), oci.WithMemorySwap(l.MemoryBytes))
	}
	if l.Pids > 0 {
		opts = append(opts, oci.WithPidsLimit(l.Pids))
	}
	if l.CPUs > 0 {
		opts = append(opts, oci.WithCPUCFS(int64(l.CPUs*cpuPeriod), cpuPeriod))
	}
	return opts
}

func hostname(s sandbox.Spec) string {
	if s.Vary.Hostname != "" {
		return s.Vary.Hostname
	}
	return "cleanroom"
}

// withVariation applies what `cleanroom rebuild` varies in the process:
// user, umask, CPU set and the order of the environment. It runs last, so
// the environment it reverses is the final one (image's and step's).
func withVariation(v sandbox.Variation) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if v.UID != 0 {
			s.Process.User.UID, s.Process.User.GID = v.UID, v.GID
			s.Process.User.AdditionalGids = nil
			// A non-root process loses its capabilities at execve unless
			// they are ambient: the step keeps exactly the set root would
			// have (so it writes the workspace as root would), no more.
			if c := s.Process.Capabilities; c != nil {
				c.Inheritable = slices.Clone(c.Effective)
				c.Ambient = slices.Clone(c.Effective)
			}
		}
		if v.Umask != nil {
			m := *v.Umask
			s.Process.User.Umask = &m
		}
		if v.CPUSet != "" {
			if s.Linux.Resources == nil {
				s.Linux.Resources = &specs.LinuxResources{}
			}
			if s.Linux.Resources.CPU == nil {
				s.Linux.Resources.CPU = &specs.LinuxCPU{}
			}
			s.Linux.Resources.CPU.Cpus = v.CPUSet
		}
		if v.ReverseEnv {
			slices.Reverse(s.Process.Env)
		}
		return nil
	}
}

// withArgs sets the argv: the spec's Args, or (a service) the image's
// entrypoint followed by Command, or the image's own entrypoint and cmd as
// WithImageConfig set them.
func withArgs(img containerd.Image, s sandbox.Spec) oci.SpecOpts {
	return func(ctx context.Context, c oci.Client, ctr *containers.Container, sp *oci.Spec) error {
		switch {
		case len(s.Args) > 0:
			return oci.WithProcessArgs(s.Args...)(ctx, c, ctr, sp)
		case s.Command != nil:
			ic, err := img.Spec(ctx)
			if err != nil {
				return err
			}
			args := append(append([]string{}, ic.Config.Entrypoint...), s.Command...)
			if len(args) == 0 {
				return fmt.Errorf("image %s has no entrypoint and the command is empty", img.Name())
			}
			return oci.WithProcessArgs(args...)(ctx, c, ctr, sp)
		}
		if sp.Process == nil || len(sp.Process.Args) == 0 {
			return fmt.Errorf("image %s has neither entrypoint nor cmd; give a command", img.Name())
		}
		return nil
	}
}

func withCwd(cwd string) oci.SpecOpts {
	return func(ctx context.Context, c oci.Client, ctr *containers.Container, sp *oci.Spec) error {
		if cwd == "" {
			return nil // the image's, as WithImageConfig set it
		}
		return oci.WithProcessCwd(cwd)(ctx, c, ctr, sp)
	}
}

// defaultPath is used when neither the image nor the step sets PATH.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// withDefaultPath makes sure PATH is set.
func withDefaultPath(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	for _, kv := range s.Process.Env {
		if strings.HasPrefix(kv, "PATH=") {
			return nil
		}
	}
	s.Process.Env = append(s.Process.Env, defaultPath)
	return nil
}

func withOCIVersion(v string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		s.Version = v
		return nil
	}
}

func withNoInheritableCaps(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	if s.Process.Capabilities != nil {
		s.Process.Capabilities.Inheritable = nil
		s.Process.Capabilities.Ambient = nil
	}
	return nil
}

// withRlimits adds "no core dumps" (they could hold secrets fetched at build
// time and fill the workspace) to the default open-file limit.
func withRlimits(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	s.Process.Rlimits = append(s.Process.Rlimits, specs.POSIXRlimit{Type: "RLIMIT_CORE", Hard: 0, Soft: 0})
	return nil
}

var seccompDigestOnce = sync.OnceValue(func() string {
	sp := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{
		Bounding: Capabilities, Effective: Capabilities, Permitted: Capabilities,
	}}}
	b, err := json.Marshal(seccomp.DefaultProfile(sp))
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
})

// seccompDigest identifies the applied seccomp profile for provenance.
func seccompDigest() string { return seccompDigestOnce() }

// silenceClientLogs keeps containerd's client library (logrus) from writing
// to the runner's stderr; the runner reports errors through hclog itself.
func silenceClientLogs() {
	log.L.Logger.SetLevel(logrus.ErrorLevel)
}
