package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestImportRef(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.WriteFile(filepath.Join(dir, "builder.tar"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(dir, "images"), 0o755)
	os.WriteFile(filepath.Join(dir, "images", "app.tar"), []byte("x"), 0o644)
	const noFile = "no such file; a registry image is pulled only when written with its registry host, e.g. docker.io/library/busybox:1.36 or 127.0.0.1:5000/builder:1"
	for _, tc := range []struct{ arg, want, err string }{
		{arg: "builder.tar", want: "oci-archive:builder.tar"},
		{arg: "images/app.tar", want: "oci-archive:images/app.tar"},
		{arg: "docker-archive:builder.tar", want: "docker-archive:builder.tar"},
		{arg: "127.0.0.1:5000/builder:1", want: "127.0.0.1:5000/builder:1"},
		{arg: "docker.io/library/busybox:1.36", want: "docker.io/library/busybox:1.36"},
		{arg: "localhost/team/b@sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", want: "localhost/team/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
		{arg: "nope.tar", err: "image import nope.tar: " + noFile},
		{arg: "images/nope.tar", err: "image import images/nope.tar: " + noFile},
		{arg: "busybox", err: "image import busybox: " + noFile},
		{arg: "./Not A Ref.tar", err: "image import ./Not A Ref.tar: " + noFile},
		{arg: "oci-archive:nope.tar", err: "image import oci-archive:nope.tar: nope.tar: no such file"},
	} {
		got, err := importRef(tc.arg)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("importRef(%q) = %q, %v; want error %q", tc.arg, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("importRef(%q) = %q, %v; want %q", tc.arg, got, err, tc.want)
		}
	}
}
