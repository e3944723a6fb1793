package imagepack

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// BusyboxRootfs lays out a minimal root filesystem at dst from a static
// busybox binary (Debian's busybox-static): /bin/busybox with a symlink per
// applet, /etc/passwd and /etc/group for root and nobody, and empty /tmp,
// /workspace and /root. It is enough for shell steps, and it is what the
// examples and the tests run in.
func BusyboxRootfs(dst, busybox string) error {
	out, err := exec.Command(busybox, "--list-full").Output()
	if err != nil {
		return fmt.Errorf("%s --list-full: %w (is it busybox-static?)", busybox, err)
	}
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "workspace", "root", "proc", "sys", "dev"} {
		if err := os.MkdirAll(filepath.Join(dst, d), 0o755); err != nil {
			return err
		}
	}
	os.Chmod(filepath.Join(dst, "tmp"), 0o1777)
	if err := copyFile(busybox, filepath.Join(dst, "bin/busybox"), 0o755); err != nil {
		return err
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "bin/busybox" {
			continue
		}
		link := filepath.Join(dst, applet)
		rel, _ := filepath.Rel(filepath.Dir(link), filepath.Join(dst, "bin/busybox"))
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return err
		}
		if err := os.Symlink(rel, link); err != nil && !os.IsExist(err) {
			return err
		}
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":  "root:x:0:\nnogroup:x:65534:\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dst, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
