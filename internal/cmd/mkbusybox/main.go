// Command mkbusybox builds the examples' step images from Debian's
// busybox-static, optionally with a Go toolchain or host programs (with the
// shared libraries they load) copied in: a reproducible OCI archive, no
// registry needed. The services example packs Debian's Redis that way:
//
//	mkbusybox -o redis.tar -add /usr/bin/redis-server -add /usr/bin/redis-cli -volume /data
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/cleanroom-ci/cleanroom/sandbox/imagepack"
)

func main() {
	out := flag.String("o", "", "archive to write")
	busybox := flag.String("busybox", "/bin/busybox", "static busybox binary (Debian: busybox-static)")
	goroot := flag.String("goroot", "", "also copy this Go toolchain to /usr/local/go")
	var add, volumes list
	flag.Var(&add, "add", "also copy this host program and the libraries ldd lists for it (repeatable)")
	flag.Var(&volumes, "volume", "declare this directory a volume in the image config (repeatable)")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "usage: mkbusybox -o ARCHIVE")
		os.Exit(2)
	}
	if err := build(*out, *busybox, *goroot, add, volumes); err != nil {
		fmt.Fprintln(os.Stderr, "mkbusybox:", err)
		os.Exit(2)
	}
}

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func build(out, busybox, goroot string, add, volumes []string) error {
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
	for _, prog := range add {
		if err := addProgram(root, prog); err != nil {
			return err
		}
	}
	img, err := imagepack.Image(root, imagepack.Options{Env: env, Cmd: []string{"/bin/sh"}, Volumes: volumes})
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

// addProgram copies a host program (under its own name: multi-call
// binaries pick their role from argv[0]) and the shared objects ldd lists
// for it to the same paths in root.
func addProgram(root, prog string) error {
	out, err := exec.Command("ldd", prog).Output()
	if err != nil {
		return fmt.Errorf("ldd %s: %w", prog, err)
	}
	files := []string{prog}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			files = append(files, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			files = append(files, f[0])
		}
	}
	for _, src := range files {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		fi, err := os.Stat(src)
		if err != nil {
			return err
		}
		dst := filepath.Join(root, src)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		os.Remove(dst) // a busybox applet link of the same name
		if err := os.WriteFile(dst, b, fi.Mode().Perm()); err != nil {
			return err
		}
	}
	return nil
}
