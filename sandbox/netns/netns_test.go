package netns_test

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/cleanroom-ci/cleanroom/internal/testenv"
	"github.com/cleanroom-ci/cleanroom/sandbox/netns"
)

// nsDir returns a fresh directory for namespace files and unmounts it (New
// makes it a shared mount point) before the test's temp dir is removed.
func nsDir(t *testing.T) string {
	dir := filepath.Join(t.TempDir(), "netns")
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

func newNS(t *testing.T) *netns.Namespace {
	t.Helper()
	testenv.RequireRoot(t)
	dir := nsDir(t)
	ns, err := netns.New(dir, "test-ns")
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

func TestNamespaceHasOnlyLoopbackAndNoRoutes(t *testing.T) {
	ns := newNS(t)
	h, err := vnetns.GetFromPath(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	links, err := nl.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	if len(links) != 1 || links[0].Attrs().Name != "lo" {
		var names []string
		for _, l := range links {
			names = append(names, l.Attrs().Name)
		}
		t.Fatalf("links = %v, want only lo", names)
	}
	if links[0].Attrs().Flags&net.FlagUp == 0 {
		t.Fatal("lo is down")
	}
	routes, err := nl.RouteList(nil, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst == nil || r.Gw != nil {
			t.Fatalf("unexpected route %v: a default or gateway route would leave the namespace", r)
		}
	}
}

func TestListenerLivesInNamespace(t *testing.T) {
	ns := newNS(t)
	l, err := ns.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "inside")
			c.Close()
		}
	}()
	addr := l.Addr().String()

	// From inside the namespace the listener answers.
	var got []byte
	if err := ns.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		got, err = io.ReadAll(c)
		return err
	}); err != nil {
		t.Fatalf("dial inside: %v", err)
	}
	if string(got) != "inside" {
		t.Fatalf("got %q", got)
	}

	// The host namespace's loopback is a different one: the same address
	// must not reach the listener from there.
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		b, _ := io.ReadAll(c)
		c.Close()
		if string(b) == "inside" {
			t.Fatal("listener inside the namespace was reachable from the host namespace")
		}
	}

	// A host listener is not reachable from inside.
	hostL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hostL.Close()
	err = ns.Do(func() error {
		c, err := net.DialTimeout("tcp", hostL.Addr().String(), time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err == nil {
		t.Fatal("host loopback listener reachable from inside the namespace")
	}
}

func TestCloseRemovesAndIsIdempotent(t *testing.T) {
	ns := newNS(t)
	if err := ns.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ns.Path()); !os.IsNotExist(err) {
		t.Fatalf("namespace file still present: %v", err)
	}
	if err := ns.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestListAndRemove(t *testing.T) {
	testenv.RequireRoot(t)
	dir := nsDir(t)
	a, err := netns.New(dir, "run1-a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := netns.New(dir, "run2-b")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got, err := netns.List(dir, "run1-")
	if err != nil || len(got) != 1 || got[0] != a.Path() {
		t.Fatalf("List = %v, %v", got, err)
	}
	if err := netns.Remove(got[0]); err != nil {
		t.Fatal(err)
	}
	if left, _ := netns.List(dir, "run1-"); len(left) != 0 {
		t.Fatalf("left: %v", left)
	}
}

func TestInvalidName(t *testing.T) {
	testenv.RequireRoot(t)
	for _, name := range []string{"", "a/b", "..", "."} {
		if _, err := netns.New(nsDir(t), name); err == nil {
			t.Errorf("New(%q) succeeded", name)
		}
	}
}

// sharedMountPoint reports whether dir is a mount point with shared
// propagation, which prepareDir makes of it.
func sharedMountPoint(t *testing.T, dir string) bool {
	t.Helper()
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mi), "\n") {
		f := strings.Fields(l)
		if len(f) < 7 || f[4] != dir {
			continue
		}
		for _, opt := range f[6:] {
			if opt == "-" {
				break
			}
			if strings.HasPrefix(opt, "shared:") {
				return true
			}
		}
	}
	return false
}

// ReleaseDir unmounts the namespaces' directory only when it is empty and
// no other run is busy, and leaves nothing mounted after the last one.
func TestReleaseDir(t *testing.T) {
	testenv.RequireRoot(t)
	dir := nsDir(t)
	if err := netns.ReleaseDir(dir, nil); err != nil {
		t.Fatalf("ReleaseDir of a directory not made yet: %v", err)
	}
	ns, err := netns.New(dir, "keep")
	if err != nil {
		t.Fatal(err)
	}
	if err := netns.ReleaseDir(dir, nil); err != nil || !sharedMountPoint(t, dir) {
		t.Fatalf("released while a namespace was in it: %v", err)
	}
	if _, err := ns.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatalf("the namespace is gone after ReleaseDir: %v", err)
	}
	ns.Close()
	if err := netns.ReleaseDir(dir, func() bool { return true }); err != nil || !sharedMountPoint(t, dir) {
		t.Fatalf("released while another run was alive: %v", err)
	}
	if err := netns.ReleaseDir(dir, func() bool { return false }); err != nil {
		t.Fatal(err)
	}
	if sharedMountPoint(t, dir) {
		t.Fatal("still a mount point after the last namespace and run")
	}
	if err := netns.ReleaseDir(dir, nil); err != nil {
		t.Fatalf("second ReleaseDir: %v", err)
	}
	// The next run makes it shared again.
	ns, err = netns.New(dir, "again")
	if err != nil || !sharedMountPoint(t, dir) {
		t.Fatalf("New after a release: %v", err)
	}
	ns.Close()
}

// A release racing a run's first namespace never leaves that namespace
// pinned in a directory that is no longer a shared mount point (where its
// unmount would not reach the copies in other mount namespaces).
func TestReleaseDirRacingNew(t *testing.T) {
	testenv.RequireRoot(t)
	dir := nsDir(t)
	stop := make(chan struct{})
	released := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				released <- n
				return
			default:
			}
			if err := netns.ReleaseDir(dir, nil); err != nil {
				t.Errorf("ReleaseDir: %v", err)
			}
			n++
		}
	}()
	bad := 0
	for i := 0; i < 300; i++ {
		ns, err := netns.New(dir, fmt.Sprintf("race-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if !sharedMountPoint(t, dir) {
			bad++
		}
		ns.Close()
	}
	close(stop)
	n := <-released
	if bad > 0 {
		t.Fatalf("%d of 300 namespaces were pinned in a directory no longer shared (%d releases ran)", bad, n)
	}
	t.Logf("%d releases ran alongside 300 namespaces", n)
}
