// Package netns creates the network namespaces that build steps run in: a
// namespace with a loopback interface and nothing else. With no other
// interface and no route, a step can reach only sockets that were bound
// inside its namespace, which are the runner's own (the egress proxy). That
// is isolation by construction: there is no firewall rule a build could race,
// remove or outlive, and a bug fails closed.
//
// Each namespace is kept alive by a bind mount of its nsfs inode on a file in
// a directory the runner owns, so a container can join it by path and the
// runner can find and remove what a crashed run left behind.
package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/cleanroom-ci/cleanroom/sandbox"
	"github.com/cleanroom-ci/cleanroom/sandbox/userns"
)

// Namespace is a loopback-only network namespace pinned at Path.
type Namespace struct {
	path string
	user *userns.Pinned // the owning user namespace, when not the host's
}

// Path is the file the namespace is bind-mounted on; give it to the
// container runtime to join the namespace.
func (n *Namespace) Path() string { return n.path }

// Provider is a sandbox.NetworkProvider of namespaces owned by the host's
// user namespace, pinned in Dir.
type Provider struct{ Dir string }

// NewNetwork creates the step's namespace.
func (p Provider) NewNetwork(_ context.Context, ns sandbox.NetworkSpec) (sandbox.Network, error) {
	return New(p.Dir, ns.ID)
}

// UserPath is the pinned user namespace that owns the network namespace,
// "" when the host's does.
func (n *Namespace) UserPath() string {
	if n.user == nil {
		return ""
	}
	return n.user.UserPath
}

// NewOwned creates a namespace owned by a new user namespace that maps
// container ids onto r, both pinned in dir (the user namespace at
// dir/name.user), with lo up and nothing else. A container that joins both
// gets no host uevents and sees only its namespace's sysctls; the runner
// (host root) can still enter the network namespace to open listeners.
func NewOwned(dir, name string, r userns.Range) (*Namespace, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	unlock, err := prepareDir(dir)
	if err != nil {
		return nil, err
	}
	p, err := userns.Pin(dir, name, r, true)
	unlock()
	if err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	n := &Namespace{path: p.NetPath, user: p}
	if err := n.loopbackUp(); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

func checkName(name string) error {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return fmt.Errorf("netns: invalid name %q", name)
	}
	return nil
}

// New creates a namespace pinned at dir/name with lo up and nothing else.
func New(dir, name string) (*Namespace, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	unlock, err := prepareDir(dir)
	if err != nil {
		return nil, err
	}
	path, err := pinNew(dir, name)
	unlock()
	if err != nil {
		return nil, err
	}
	n := &Namespace{path: path}
	if err := n.loopbackUp(); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// pinNew creates a network namespace and bind-mounts it on dir/name.
func pinNew(dir, name string) (string, error) {
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return "", fmt.Errorf("netns: create mount point: %w", err)
	}
	f.Close()

	errc := make(chan error, 1)
	go func() {
		// The thread is switched into the new namespace and never switched
		// back: it is never unlocked, so the Go runtime discards it when
		// this goroutine returns instead of reusing a thread that sits in
		// the wrong namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("netns: unshare: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("netns: pin namespace at %s: %w", path, err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return "", err
	}
	return path, nil
}

// loopbackUp brings lo up through a netlink socket opened in the namespace,
// without moving any thread. A namespace joined by path is not configured by
// runc (it only brings lo up in namespaces it creates itself).
func (n *Namespace) loopbackUp() error {
	h, err := vnetns.GetFromPath(n.path)
	if err != nil {
		return fmt.Errorf("netns: open %s: %w", n.path, err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		return fmt.Errorf("netns: netlink: %w", err)
	}
	defer nl.Close()
	lo, err := nl.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("netns: find lo: %w", err)
	}
	if err := nl.LinkSetUp(lo); err != nil {
		return fmt.Errorf("netns: bring lo up: %w", err)
	}
	return nil
}

// Listen opens a listener inside the namespace. The socket keeps the
// namespace it was created in, so it can be served from any goroutine while
// the proxy's upstream connections are dialled from the host namespace.
func (n *Namespace) Listen(network, address string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen(network, address)
		return err
	})
	return l, err
}

// Dial connects from inside the namespace. The socket is made on the
// namespace's thread and keeps the namespace, so the connection is used
// from any goroutine.
func (n *Namespace) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// Do runs fn on an OS thread that has joined the namespace. fn must not
// start goroutines that expect to inherit the namespace.
func (n *Namespace) Do(fn func() error) error {
	target, err := vnetns.GetFromPath(n.path)
	if err != nil {
		return fmt.Errorf("netns: open %s: %w", n.path, err)
	}
	defer target.Close()

	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: current namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := vnetns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns: enter %s: %w", n.path, err)
			return
		}
		ferr := fn()
		if err := vnetns.Set(orig); err != nil {
			// Leave the thread locked: the runtime will discard it rather
			// than schedule other goroutines into the build's namespace.
			errc <- errors.Join(ferr, fmt.Errorf("netns: restore namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Close unpins the namespace and removes its file. The kernel frees the
// namespace when the last process in it and the last socket of it are gone.
// Close is idempotent.
func (n *Namespace) Close() error {
	if n.user != nil {
		return n.user.Remove()
	}
	return remove(n.path)
}

func remove(path string) error {
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("netns: unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("netns: remove %s: %w", path, err)
	}
	return nil
}

// Remove unpins and removes a namespace file by path; used to reap what a
// crashed run left behind.
func Remove(path string) error { return remove(path) }

// List returns the namespace files in dir whose names start with prefix.
func List(dir, prefix string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out, nil
}

// prepareDir makes dir a shared mount point, as `ip netns` does for
// /run/netns, so that unmounting a namespace file also removes the copies
// that mount propagation placed in other mount namespaces; otherwise a copy
// could keep a dead build's namespace alive. It returns holding dir's lock
// (see lockDir): the caller pins its namespace file, then calls unlock, so
// that ReleaseDir cannot unmount dir in between.
func prepareDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	l, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	if err := shareDir(dir); err != nil {
		l.Release()
		return nil, err
	}
	return func() { l.Release() }, nil
}

func shareDir(dir string) error {
	err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("netns: make %s shared: %w", dir, err)
	}
	// Not a mount point yet: bind it onto itself first.
	if err := unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("netns: bind %s: %w", dir, err)
	}
	if err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("netns: make %s shared: %w", dir, err)
	}
	return nil
}
