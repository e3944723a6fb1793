package pipeline

import (
	"strings"
	"testing"
)

const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParseImageRef(t *testing.T) {
	valid := []struct {
		in   string
		want ImageRef
	}{
		{"alpine", ImageRef{Kind: Registry, Ref: "alpine", Name: "alpine"}},
		{"golang:1.26", ImageRef{Kind: Registry, Ref: "golang:1.26", Name: "golang", Tag: "1.26"}},
		{"library/debian:12-slim", ImageRef{Kind: Registry, Ref: "library/debian:12-slim", Name: "library/debian", Tag: "12-slim"}},
		{"registry.example.org/team/builder:v1.2_3", ImageRef{Kind: Registry, Ref: "registry.example.org/team/builder:v1.2_3", Name: "registry.example.org/team/builder", Tag: "v1.2_3"}},
		{"localhost:5000/x", ImageRef{Kind: Registry, Ref: "localhost:5000/x", Name: "localhost:5000/x"}},
		{"localhost/x:1", ImageRef{Kind: Registry, Ref: "localhost/x:1", Name: "localhost/x", Tag: "1"}},
		{"Registry.Example.org:443/a/b", ImageRef{Kind: Registry, Ref: "Registry.Example.org:443/a/b", Name: "Registry.Example.org:443/a/b"}},
		{"[::1]:5000/img", ImageRef{Kind: Registry, Ref: "[::1]:5000/img", Name: "[::1]:5000/img"}},
		{"a__b/c-d--e/f.g", ImageRef{Kind: Registry, Ref: "a__b/c-d--e/f.g", Name: "a__b/c-d--e/f.g"}},
		{"alpine@sha256:" + hex64, ImageRef{Kind: Registry, Ref: "alpine@sha256:" + hex64, Name: "alpine", Digest: "sha256:" + hex64}},
		{"r.example:5000/x:1@sha256:" + hex64, ImageRef{Kind: Registry, Ref: "r.example:5000/x:1@sha256:" + hex64, Name: "r.example:5000/x", Tag: "1", Digest: "sha256:" + hex64}},
		{"oci-archive:./images/builder.tar", ImageRef{Kind: OCIArchive, Ref: "./images/builder.tar"}},
		{"oci-archive:/abs/b.tar", ImageRef{Kind: OCIArchive, Ref: "/abs/b.tar"}},
		{"docker-archive:img.tar", ImageRef{Kind: DockerArchive, Ref: "img.tar"}},
	}
	for _, tt := range valid {
		got, err := ParseImageRef(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseImageRef(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			continue
		}
		if got.String() != tt.in {
			t.Errorf("ParseImageRef(%q).String() = %q", tt.in, got.String())
		}
		if got.Pinned() != (tt.want.Digest != "") {
			t.Errorf("ParseImageRef(%q).Pinned() = %v", tt.in, got.Pinned())
		}
	}
	invalid := []struct{ in, want string }{
		{"", "empty image reference; " + imageRefHelp},
		{"oci-archive:", `"oci-archive:" needs a path to the archive, e.g. oci-archive:./images/builder.tar`},
		{"docker-archive:  ", `"docker-archive:" needs a path to the archive, e.g. docker-archive:./images/builder.tar`},
		{"docker://alpine", `invalid image reference "docker://alpine": no URL scheme is accepted; ` + imageRefHelp},
		{"Alpine", `invalid image reference "Alpine": repository "Alpine" must be lower-case`},
		{"r.example/Team/x", `invalid image reference "r.example/Team/x": repository "r.example/Team/x" must be lower-case`},
		{"alpine@sha256:ABC", `invalid image reference "alpine@sha256:ABC": digest "sha256:ABC" must be sha256: followed by 64 lower-case hex digits`},
		{"alpine@sha512:" + hex64, `invalid image reference "alpine@sha512:` + hex64 + `": digest "sha512:` + hex64 + `" must be sha256: followed by 64 lower-case hex digits`},
		{"alpine@", `invalid image reference "alpine@": digest "" must be sha256: followed by 64 lower-case hex digits`},
		{"alpine:", `invalid image reference "alpine:": tag "" must be 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'`},
		{"alpine:.x", `invalid image reference "alpine:.x": tag ".x" must be 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'`},
		{"alpine:" + strings.Repeat("a", 129), `invalid image reference "alpine:` + strings.Repeat("a", 129) + `": tag "` + strings.Repeat("a", 129) + `" must be 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'`},
		{"bad_host.example/x", `invalid image reference "bad_host.example/x": "bad_host.example" is not a valid registry host[:port]`},
		{"r.example:port/x", `invalid image reference "r.example:port/x": "r.example:port" is not a valid registry host[:port]`},
		{"a//b", `invalid image reference "a//b": path component "" must be lower-case letters and digits separated by '.', '_', '__' or '-'; ` + imageRefHelp},
		{"a/-b", `invalid image reference "a/-b": path component "-b" must be lower-case letters and digits separated by '.', '_', '__' or '-'; ` + imageRefHelp},
		{"a b", `invalid image reference "a b": path component "a b" must be lower-case letters and digits separated by '.', '_', '__' or '-'; ` + imageRefHelp},
		{strings.Repeat("a", 256), `invalid image reference "` + strings.Repeat("a", 256) + `": the name is longer than 255 characters`},
	}
	for _, tt := range invalid {
		got, err := ParseImageRef(tt.in)
		if err == nil || err.Error() != tt.want {
			t.Errorf("ParseImageRef(%q) = %+v, %v;\nwant error %q", tt.in, got, err, tt.want)
		}
	}
}

func TestImageRefResolve(t *testing.T) {
	tests := []struct{ in, dir, want string }{
		{"oci-archive:./images/b.tar", "/repo", "oci-archive:/repo/images/b.tar"},
		{"oci-archive:../shared/b.tar", "/repo/sub", "oci-archive:/repo/shared/b.tar"},
		{"docker-archive:b.tar", "rel", "docker-archive:rel/b.tar"},
		{"docker-archive:/abs/b.tar", "/repo", "docker-archive:/abs/b.tar"},
		{"golang:1.26", "/repo", "golang:1.26"},
	}
	for _, tt := range tests {
		ref, err := ParseImageRef(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		if got := ref.Resolve(tt.dir).String(); got != tt.want {
			t.Errorf("Resolve(%q, %q) = %q; want %q", tt.in, tt.dir, got, tt.want)
		}
	}
	if s := ImageKind(9).String(); s != "ImageKind(9)" {
		t.Errorf("ImageKind(9).String() = %q", s)
	}
}
