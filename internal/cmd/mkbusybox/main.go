// Command mkbusybox builds the examples' step image from Debian's
// busybox-static: a reproducible OCI archive, no registry needed.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cleanroom-ci/cleanroom/sandbox/imagepack"
)

func main() {
	out := flag.String("o", "", "archive to write")
	busybox := flag.String("busybox", "/bin/busybox", "static busybox binary (Debian: busybox-static)")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "usage: mkbusybox -o ARCHIVE")
		os.Exit(2)
	}
	if err := build(*out, *busybox); err != nil {
		fmt.Fprintln(os.Stderr, "mkbusybox:", err)
		os.Exit(2)
	}
}

func build(out, busybox string) error {
	dir, err := os.MkdirTemp("", "mkbusybox-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	root := filepath.Join(dir, "rootfs")
	if err := imagepack.BusyboxRootfs(root, busybox); err != nil {
		return err
	}
	img, err := imagepack.Image(root, imagepack.Options{Cmd: []string{"/bin/sh"}})
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
