package pipeline

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
)

// ImageKind says where an image comes from.
type ImageKind int

const (
	// Registry is a reference to pull, e.g. "golang:1.26" or
	// "registry.example.org:5000/team/builder@sha256:…".
	Registry ImageKind = iota
	// OCIArchive is an OCI image layout tarball on disk ("oci-archive:PATH").
	OCIArchive
	// DockerArchive is a "docker save" tarball on disk ("docker-archive:PATH").
	DockerArchive
)

func (k ImageKind) String() string {
	switch k {
	case Registry:
		return "registry"
	case OCIArchive:
		return "oci-archive"
	case DockerArchive:
		return "docker-archive"
	}
	return fmt.Sprintf("ImageKind(%d)", int(k))
}

// ImageRef is a syntactically valid image reference.
type ImageRef struct {
	Kind ImageKind
	// Ref is the registry reference as written (including any tag and
	// digest) or, for archives, the path as written after the "KIND:" prefix.
	Ref string
	// Name is the repository for registry references, including the
	// registry host if one was written ("registry.example.org/team/builder").
	// Empty for archives.
	Name string
	// Tag is the tag if one was written; empty for archives.
	Tag string
	// Digest is "sha256:<64 hex>" when the registry reference is pinned.
	// Archives have none: their identity is the hash of the file, taken
	// when the runner imports it.
	Digest string
}

// Pinned reports whether the reference names its content by digest, so
// that it means the same bytes forever. Archive references are never
// pinned: the file they name can change between runs.
func (r ImageRef) Pinned() bool { return r.Digest != "" }

// String returns the reference in the form ParseImageRef accepts.
func (r ImageRef) String() string {
	switch r.Kind {
	case OCIArchive:
		return "oci-archive:" + r.Ref
	case DockerArchive:
		return "docker-archive:" + r.Ref
	}
	return r.Ref
}

// Resolve returns the reference with a relative archive path made relative
// to dir instead of the current directory. Archive paths in a pipeline are
// relative to the pipeline file's directory (Pipeline.Dir), so that a
// pipeline works the same whichever directory the runner is started from.
// Registry references and absolute paths are returned unchanged.
func (r ImageRef) Resolve(dir string) ImageRef {
	if r.Kind != Registry && !filepath.IsAbs(r.Ref) {
		r.Ref = filepath.Join(dir, r.Ref)
	}
	return r
}

var (
	// A registry host: DNS labels separated by dots (or an IPv6 literal in
	// brackets), with an optional port.
	domainRE = regexp.MustCompile(`^(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*|\[[a-fA-F0-9:]+\])(?::[0-9]{1,5})?$`)
	// A repository path component, as in the OCI distribution spec.
	pathComponentRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)
	tagRE           = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	sha256HexRE     = regexp.MustCompile(`^[a-f0-9]{64}$`)
)

const imageRefHelp = "use a registry reference ([HOST[:PORT]/]PATH[:TAG][@sha256:DIGEST], " +
	"e.g. golang:1.26 or registry.example.org/team/builder@sha256:…), " +
	"oci-archive:PATH or docker-archive:PATH"

// ParseImageRef checks the syntax of an image reference. It does not
// contact any registry or look at the file system.
//
// Accepted forms:
//
//	oci-archive:PATH               PATH non-empty, relative to the pipeline file's directory
//	docker-archive:PATH            likewise
//	[HOST[:PORT]/]PATH[:TAG][@sha256:<64 lower-case hex>]
//
// In a registry reference the first component is taken as the host when it
// contains a "." or a ":" or is "localhost" (the same rule docker uses);
// path components are lower-case letters and digits separated by ".", "_",
// "__" or dashes.
func ParseImageRef(s string) (ImageRef, error) {
	for _, k := range []ImageKind{OCIArchive, DockerArchive} {
		if path, ok := strings.CutPrefix(s, k.String()+":"); ok {
			if strings.TrimSpace(path) == "" {
				return ImageRef{}, fmt.Errorf("%q needs a path to the archive, e.g. %s:./images/builder.tar", k.String()+":", k)
			}
			return ImageRef{Kind: k, Ref: path}, nil
		}
	}
	if s == "" {
		return ImageRef{}, errors.New("empty image reference; " + imageRefHelp)
	}
	if strings.Contains(s, "://") {
		return ImageRef{}, fmt.Errorf("invalid image reference %q: no URL scheme is accepted; %s", s, imageRefHelp)
	}
	ref := ImageRef{Kind: Registry, Ref: s}
	rest := s
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		digest := rest[i+1:]
		hex, ok := strings.CutPrefix(digest, "sha256:")
		if !ok || !sha256HexRE.MatchString(hex) {
			return ImageRef{}, fmt.Errorf("invalid image reference %q: digest %q must be sha256: followed by 64 lower-case hex digits", s, digest)
		}
		ref.Digest = digest
		rest = rest[:i]
	}
	// A ':' after the last '/' starts the tag; one before it is a port.
	if i := strings.LastIndexByte(rest, ':'); i > strings.LastIndexByte(rest, '/') {
		ref.Tag = rest[i+1:]
		rest = rest[:i]
		if !tagRE.MatchString(ref.Tag) {
			return ImageRef{}, fmt.Errorf("invalid image reference %q: tag %q must be 1 to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'", s, ref.Tag)
		}
	}
	ref.Name = rest
	if len(rest) > 255 {
		return ImageRef{}, fmt.Errorf("invalid image reference %q: the name is longer than 255 characters", s)
	}
	parts := strings.Split(rest, "/")
	if len(parts) > 1 && (strings.ContainsAny(parts[0], ".:") || parts[0] == "localhost") {
		if !domainRE.MatchString(parts[0]) {
			return ImageRef{}, fmt.Errorf("invalid image reference %q: %q is not a valid registry host[:port]", s, parts[0])
		}
		parts = parts[1:]
	}
	for _, p := range parts {
		if pathComponentRE.MatchString(p) {
			continue
		}
		if p != strings.ToLower(p) {
			return ImageRef{}, fmt.Errorf("invalid image reference %q: repository %q must be lower-case", s, rest)
		}
		return ImageRef{}, fmt.Errorf("invalid image reference %q: path component %q must be lower-case letters and digits separated by '.', '_', '__' or '-'; %s", s, p, imageRefHelp)
	}
	return ref, nil
}
