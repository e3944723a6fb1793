package manifest

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	intoto "github.com/in-toto/attestation/go/v1"
)

// Verify checks artifacts (file paths) and a policy against a statement.
//
// An artifact passes when its sha256 is the digest of some subject; the
// subject's name need not match the path (it is reported in NameMatch).
// The statement fails as a whole when it is not of BuildType or records a
// failed run. The error is nil only when every check passed; otherwise it
// lists every failure, as does Report.Failures. A statement that cannot be
// read as provenance at all returns an empty Report and that error.
func Verify(st *intoto.Statement, artifacts []string, pol Policy) (Report, error) {
	prov, err := Provenance(st)
	if err != nil {
		return Report{}, err
	}
	r := Report{
		Builder:   prov.GetRunDetails().GetBuilder().GetId(),
		Images:    []string{},
		Artifacts: []ArtifactResult{},
		Failures:  []string{},
		Fetched:   []FetchedDependency{},
		Passed:    []string{},
	}
	fail := func(format string, args ...any) { r.Failures = append(r.Failures, fmt.Sprintf(format, args...)) }
	pass := func(format string, args ...any) { r.Passed = append(r.Passed, fmt.Sprintf(format, args...)) }

	if bt := prov.GetBuildDefinition().GetBuildType(); bt != BuildType {
		fail("buildType is %q, not %q", bt, BuildType)
	}
	internal := prov.GetBuildDefinition().GetInternalParameters().GetFields()
	if fs := internal["failedStep"].GetStringValue(); fs != "" {
		r.FailedStep = fs
		fail("the run failed at step %q", fs)
	}
	for _, d := range internal["egressDenied"].GetListValue().GetValues() {
		r.Denied += int(d.GetStructValue().GetFields()["count"].GetNumberValue())
	}
	r.Runtime = internal["sandbox"].GetStructValue().GetFields()["runtime"].GetStringValue()
	r.SourceRepo = prov.GetBuildDefinition().GetExternalParameters().GetFields()["source"].
		GetStructValue().GetFields()["remote"].GetStringValue()

	var undigested, unpinned []string
	for _, rd := range prov.GetBuildDefinition().GetResolvedDependencies() {
		switch rd.GetAnnotations().GetFields()["kind"].GetStringValue() {
		case KindSource:
			r.SourceCommit = rd.GetDigest()["gitCommit"]
		case KindImage:
			r.Images = append(r.Images, pinnedRef(rd))
			r.Services = append(r.Services, serviceImages(rd)...)
			if !isPinned(rd.GetName()) {
				unpinned = append(unpinned, rd.GetName())
			}
		case KindFetch:
			r.Dependencies++
			dep := FetchedDependency{URI: rd.GetUri()}
			if sum := rd.GetDigest()["sha256"]; isSHA256Hex(sum) {
				dep.SHA256 = sum
			} else {
				r.WithoutDigest++
				undigested = append(undigested, rd.GetUri())
			}
			r.Fetched = append(r.Fetched, dep)
		}
	}

	checkArtifacts(&r, st, artifacts, fail)
	checkPolicy(&r, pol, undigested, unpinned, fail, pass)
	checkLockfilePolicy(internal, pol, fail, pass) // lockfile.go
	if pol.FreshWorkspace {
		switch mode := internal["workspace"].GetStructValue().GetFields()["mode"].GetStringValue(); mode {
		case "fresh":
			pass("freshWorkspace: the workspace was a fresh copy")
		case "":
			fail("the provenance does not record how the workspace was made (internalParameters.workspace); policy requires freshWorkspace")
		default:
			fail("the workspace was %q (not hermetic: files of earlier runs were visible to the steps); policy requires freshWorkspace", mode)
		}
	}

	if r.OK() {
		return r, nil
	}
	return r, errors.New("manifest: verification failed:\n  - " + strings.Join(r.Failures, "\n  - "))
}

func checkArtifacts(r *Report, st *intoto.Statement, artifacts []string, fail func(string, ...any)) {
	for _, p := range artifacts {
		res := ArtifactResult{Path: p}
		sum, _, err := HashFile(p)
		if err != nil {
			fail("artifact %s: %v", p, err)
			r.Artifacts = append(r.Artifacts, res)
			continue
		}
		res.SHA256 = sum
		for _, s := range st.GetSubject() {
			if s.GetDigest()["sha256"] != sum {
				continue
			}
			named := nameMatches(p, s.GetName())
			if res.Subject == "" || (named && !res.NameMatch) {
				res.Subject, res.NameMatch, res.OK = s.GetName(), named, true
			}
		}
		if !res.OK {
			fail("artifact %s (sha256:%s) is not a subject of the statement", p, sum)
		}
		r.Artifacts = append(r.Artifacts, res)
	}
}

func checkPolicy(r *Report, pol Policy, undigested, unpinned []string, fail, pass func(string, ...any)) {
	if pol.BuilderID != "" {
		if r.Builder != pol.BuilderID {
			fail("builder is %q, policy requires %q", r.Builder, pol.BuilderID)
		} else {
			pass("builderId: builder is %q", r.Builder)
		}
	}
	if pol.SourceRepo != "" {
		switch {
		case r.SourceRepo == "":
			fail("no source repository recorded, policy requires %q", pol.SourceRepo)
		case normRepo(r.SourceRepo) != normRepo(pol.SourceRepo):
			fail("source repository is %q, policy requires %q", r.SourceRepo, pol.SourceRepo)
		case r.SourceCommit == "":
			fail("no source commit recorded for %q", r.SourceRepo)
		default:
			pass("sourceRepo: source is %s at %s", r.SourceRepo, r.SourceCommit)
		}
	}
	if pol.RequireRuntime != "" {
		switch {
		case r.Runtime != pol.RequireRuntime:
			runtime := r.Runtime
			if runtime == "" {
				runtime = "none recorded"
			}
			fail("runtime is %q, policy requires %q", runtime, pol.RequireRuntime)
		default:
			pass("requireRuntime: the steps ran under %s", r.Runtime)
		}
	}
	if pol.NoDeniedEgress {
		if r.Denied > 0 {
			fail("%d egress connections were denied; policy requires none", r.Denied)
		} else {
			pass("noDeniedEgress: no egress connection was denied")
		}
	}
	if pol.AllDependenciesDigested {
		if len(undigested) > 0 {
			fail("%d dependencies have no digest; policy requires all: %s", len(undigested), abbreviate(undigested))
		} else {
			pass("allDependenciesDigested: all %d dependencies have a sha256", r.Dependencies)
		}
	}
	if pol.ImagesPinned {
		if len(unpinned) > 0 {
			fail("%d images are not pinned by digest; policy requires all: %s", len(unpinned), abbreviate(unpinned))
		} else {
			pass("imagesPinned: all %d images are pinned by digest or are archives", len(r.Images))
		}
	}
}

// pinnedRef renders an image as a reference that pulls exactly what ran;
// a local archive is shown with its digest.
func pinnedRef(rd *intoto.ResourceDescriptor) string {
	name, d := rd.GetName(), rd.GetDigest()["sha256"]
	switch {
	case isArchive(name):
		return name + " (sha256:" + d + ")"
	case isPinned(name):
		return name
	}
	return name + "@sha256:" + d
}

// isPinned reports whether an image reference cannot resolve to other
// content on a rerun: it names a digest, or it is an archive file, whose
// content the source (and the workspace digest) already fixes.
func isPinned(ref string) bool {
	if isArchive(ref) {
		return true
	}
	_, d, ok := strings.Cut(ref, "@sha256:")
	return ok && isSHA256Hex(d)
}

func isArchive(ref string) bool {
	return strings.HasPrefix(ref, "oci-archive:") || strings.HasPrefix(ref, "docker-archive:")
}

// nameMatches reports whether subject names path: equal, or a suffix at a
// path boundary (dist/app.tar matches /tmp/x/dist/app.tar).
func nameMatches(p, subject string) bool {
	p = filepath.ToSlash(filepath.Clean(p))
	return p == subject || strings.HasSuffix(p, "/"+subject)
}

// normRepo reduces a repository URL to lowercase host plus path, without
// scheme, credentials, a ".git" suffix or a trailing slash.
func normRepo(s string) string {
	s = strings.TrimPrefix(strings.TrimSpace(s), "git+")
	if !strings.Contains(s, "://") {
		if host, p, ok := strings.Cut(s, ":"); ok && !strings.Contains(host, "/") {
			s = "ssh://" + host + "/" + strings.TrimPrefix(p, "/")
		} else {
			s = "https://" + s
		}
	}
	u, err := url.Parse(s)
	if err != nil {
		return strings.ToLower(s)
	}
	p := strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), ".git")
	return strings.ToLower(u.Hostname()) + p
}

// abbreviate lists at most a few items so a failure stays one readable line.
func abbreviate(items []string) string {
	const max = 5
	if len(items) <= max {
		return strings.Join(items, ", ")
	}
	return strings.Join(items[:max], ", ") + fmt.Sprintf(", … (%d more)", len(items)-max)
}

// ServiceImage is a service recorded in the provenance: its alias, the
// step it ran beside, and its image pinned as pinnedRef shows it.
type ServiceImage struct {
	Step  string `json:"step"`
	Alias string `json:"alias"`
	Image string `json:"image"`
}

func serviceImages(rd *intoto.ResourceDescriptor) []ServiceImage {
	var out []ServiceImage
	for _, v := range rd.GetAnnotations().GetFields()["services"].GetListValue().GetValues() {
		f := v.GetStructValue().GetFields()
		out = append(out, ServiceImage{Step: f["step"].GetStringValue(), Alias: f["alias"].GetStringValue(), Image: pinnedRef(rd)})
	}
	return out
}
