package ctrexec

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/hashicorp/go-hclog"

	"github.com/cleanroom-ci/cleanroom/internal/flock"
)

// DefaultAddress is where Debian's containerd listens.
const DefaultAddress = "/run/containerd/containerd.sock"

// ErrNoContainerd means no daemon answered and none could be started.
var ErrNoContainerd = errors.New("containerd is not running and not installed: install it (Debian: apt-get install containerd runc) or pass --containerd-address")

// privateDaemon is a containerd started by the runner for itself, with its
// own root, state and socket under the runner's state directory. Several
// runs on one machine share it: each holds a shared flock on users.lock, and
// the last one out stops it. This is the zero-set-up path for a laptop
// where no system daemon runs.
type privateDaemon struct {
	dir     string
	users   *flock.Lock
	started bool
	log     hclog.Logger
}

func (d *privateDaemon) socket() string { return filepath.Join(d.dir, "containerd.sock") }

// connect dials address and checks that a daemon answers. When explicit is
// false and nothing answers at address, it falls back to a private daemon
// under stateDir.
func connect(ctx context.Context, address string, explicit bool, stateDir string, log hclog.Logger) (*containerd.Client, *privateDaemon, error) {
	if address == "" {
		address = DefaultAddress
	}
	c, err := dial(ctx, address)
	if err == nil {
		return c, nil, nil
	}
	if explicit {
		return nil, nil, fmt.Errorf("containerd at %s does not answer (%v): start it, or omit --containerd-address to let cleanroom start a private one", address, err)
	}
	bin, lerr := exec.LookPath("containerd")
	if lerr != nil {
		return nil, nil, ErrNoContainerd
	}
	d := &privateDaemon{dir: filepath.Join(stateDir, "containerd"), log: log}
	if err := d.start(ctx, bin); err != nil {
		return nil, nil, err
	}
	c, err = dial(ctx, d.socket())
	if err != nil {
		d.stop()
		return nil, nil, fmt.Errorf("private containerd started but does not answer: %w (log: %s)", err, filepath.Join(d.dir, "containerd.log"))
	}
	return c, d, nil
}

func dial(ctx context.Context, address string) (*containerd.Client, error) {
	if _, err := os.Stat(address); err != nil {
		return nil, err
	}
	c, err := containerd.New(address, containerd.WithTimeout(5*time.Second))
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if ok, err := c.IsServing(cctx); err != nil || !ok {
		c.Close()
		if err == nil {
			err = errors.New("not serving")
		}
		return nil, err
	}
	return c, nil
}

func (d *privateDaemon) start(ctx context.Context, bin string) error {
	if err := os.MkdirAll(d.dir, 0o700); err != nil {
		return err
	}
	// runc mounts a step's rootfs from inside the step's user namespace,
	// as its unprivileged root: the path to the task state must be
	// traversable (x only, no listing), as containerd's own state is (0711).
	for _, dir := range []string{filepath.Dir(d.dir), d.dir} {
		if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o011 != 0o011 {
			if err := os.Chmod(dir, fi.Mode().Perm()|0o011); err != nil {
				return err
			}
		}
	}
	users, err := flock.Acquire(context.Background(), filepath.Join(d.dir, "users.lock"), flock.Shared)
	if err != nil {
		return err
	}
	d.users = users

	release, err := d.lockStart()
	if err != nil {
		return err
	}
	defer release()
	if c, err := dial(ctx, d.socket()); err == nil {
		c.Close()
		return nil // another run's private daemon is up: share it
	}
	cfg := filepath.Join(d.dir, "config.toml")
	conf := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
`, filepath.Join(d.dir, "root"), filepath.Join(d.dir, "state"), d.socket())
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return err
	}
	logPath := filepath.Join(d.dir, "containerd.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--config", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own session: a Ctrl-C aimed at the runner's process group must not
	// take down a daemon that other runs share; the runner stops it itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start private containerd: %w", err)
	}
	os.WriteFile(filepath.Join(d.dir, "containerd.pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)
	go cmd.Wait() // reap it if it dies while we run
	d.started = true
	d.log.Info("started a private containerd", "socket", d.socket(), "log", logPath)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := dial(ctx, d.socket()); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("private containerd did not come up within 15s (log: %s)", logPath)
}

func (d *privateDaemon) lockStart() (func(), error) {
	l, err := flock.Acquire(context.Background(), filepath.Join(d.dir, "start.lock"), flock.Exclusive)
	if err != nil {
		return nil, err
	}
	return func() { l.Release() }, nil
}

// stop ends this run's use of the private daemon and stops the daemon when
// no other run uses it.
func (d *privateDaemon) stop() {
	if d == nil || d.users == nil {
		return
	}
	d.users.Release() // drop our shared lock
	d.users = nil
	release, err := d.lockStart()
	if err != nil {
		return
	}
	defer release()
	users, err := flock.Try(filepath.Join(d.dir, "users.lock"), flock.Exclusive)
	if err != nil {
		return // someone else still uses it
	}
	defer users.Release()
	b, err := os.ReadFile(filepath.Join(d.dir, "containerd.pid"))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 || !isContainerd(pid) {
		return
	}
	syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	os.Remove(filepath.Join(d.dir, "containerd.pid"))
}

// isContainerd guards against signalling an unrelated process that reused
// the pid of a daemon that died on its own.
func isContainerd(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return err == nil && strings.TrimSpace(string(b)) == "containerd"
}
