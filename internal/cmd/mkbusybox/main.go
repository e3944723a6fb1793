// Command mkbusybox builds the examples' step images from Debian's
// busybox-static, optionally with a Go toolchain copied in: a reproducible
// OCI archive, no registry needed.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/cleanroom-ci/cleanroom/sandbox/imagepack"
)

func main() {
	out := flag.String("o", "", "archive to write")
	busybox := flag.String("busybox", "/bin/busybox", "static busybox binary (Debian: busybox-static)")
	goroot := flag.String("goroot", "", "also copy this Go toolchain to /usr/local/go")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "usage: mkbusybox -o ARCHIVE")
		os.Exit(2)
	}
	if err := build(*out, *busybox, *goroot); err != nil {
		fmt.Fprintln(os.Stderr, "mkbusybox:", err)
		os.Exit(2)
	}
}

func build(out, busybox, goroot string) error {
	dir, err := os.MkdirTemp("", "mkbusybox-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	root := filepath.Join(dir, "rootfs")
	if err := imagepack.BusyboxRootfs(root, busybox); err != nil {
		return err
	}
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if goroot != "" {
		if err := copyGo(goroot, filepath.Join(root, "usr/local/go")); err != nil {
			return err
		}
		env = []string{"PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "GOROOT=/usr/local/go"}
	}
	img, err := imagepack.Image(root, imagepack.Options{Env: env, Cmd: []string{"/bin/sh"}})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	if err := imagepack.WriteOCIArchive(out, img, "localhost/cleanroom-busybox:latest"); err != nil {
		return err
	}
	d, _ := img.Digest()
	fmt.Printf("%s\t%s\n", out, d)
	return nil
}

// copyGo copies what building needs (bin, pkg, src, lib, go.env, VERSION),
// not the toolchain's own tests and docs.
func copyGo(src, dst string) error {
	for _, part := range []string{"bin", "pkg", "src", "lib", "go.env", "VERSION"} {
		from := filepath.Join(src, part)
		if _, err := os.Stat(from); err != nil {
			continue
		}
		cmd := exec.Command("cp", "-a", from, filepath.Join(dst, part))
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("copy %s: %v: %s", from, err, out)
		}
	}
	return nil
}
