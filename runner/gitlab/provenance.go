package gitlab

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/cleanroom-ci/cleanroom/internal/atomicfile"
	"github.com/cleanroom-ci/cleanroom/internal/glob"
	"github.com/cleanroom-ci/cleanroom/runner"
	"github.com/cleanroom-ci/cleanroom/runner/manifest"
	"github.com/cleanroom-ci/cleanroom/sandbox"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
	"github.com/cleanroom-ci/cleanroom/sign"
)

// OutDir is where the provenance lands, relative to CI_PROJECT_DIR, so
// that the job can list it under artifacts:paths and GitLab stores it
// next to the artifacts it describes.
const OutDir = ".cleanroom"

// Files written into OutDir.
const (
	ProvenanceFile = "provenance.intoto.json"
	EgressLogFile  = "egress.jsonl"
)

// provenanceIfDue writes the provenance before the first post-build stage
// of a job whose script succeeded: after the last stage that runs the
// job's code (so the artifacts are final) and before the artifacts are
// uploaded (so it can be uploaded with them). It is written once.
func (d *Driver) provenanceIfDue(ctx context.Context, b Backend, job *jobDir, st *JobState, resp *Response) error {
	if _, err := os.Stat(job.file(provenanceMark)); err == nil {
		return nil
	}
	records, err := job.stages()
	if err != nil {
		return err
	}
	if !jobSucceeded(records) {
		return nil
	}
	info, err := b.Info(ctx)
	if err != nil {
		return fmt.Errorf("sandbox info: %w", err)
	}
	events, err := job.readEvents()
	if err != nil {
		return err
	}
	egressLog, err := os.ReadFile(job.file(egressFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	subjects, warnings, err := matchJobArtifacts(st, resp.Artifacts)
	for _, w := range warnings {
		fmt.Fprintf(d.stdout(), "cleanroom: provenance: %s\n", w)
	}
	if err != nil {
		return err
	}
	in, err := d.provenanceInput(st, resp, records, events, subjects, info, egressLog)
	if err != nil {
		return err
	}
	statement, err := manifest.Build(in)
	if err != nil {
		return err
	}
	data, err := manifest.Marshal(statement)
	if err != nil {
		return err
	}
	files := map[string][]byte{ProvenanceFile: data, EgressLogFile: egressLog}
	bundle, err := d.signProvenance(ctx, data, resp)
	if err != nil {
		return err
	}
	if bundle != nil {
		files[bundle.name] = bundle.data
	}
	if err := writeOutputs(st, files); err != nil {
		return err
	}
	if err := os.WriteFile(job.file(provenanceMark), nil, 0o600); err != nil {
		return err
	}
	hint := ""
	if !keepsOutDir(resp.Artifacts) {
		hint = fmt.Sprintf("; add %s/ to artifacts:paths to keep it", OutDir)
	}
	fmt.Fprintf(d.stdout(), "cleanroom: provenance written to %s (%d artifacts attested)%s\n",
		path.Join(st.ProjectDir, OutDir, ProvenanceFile), len(subjects), hint)
	return nil
}

// keepsOutDir reports whether an archive artifact uploaded on success
// lists the provenance directory (or a parent of it).
func keepsOutDir(arts []Artifact) bool {
	for _, a := range arts {
		if (a.ArtifactType != "" && a.ArtifactType != "archive") || (a.When != "" && a.When != "on_success" && a.When != "always") {
			continue
		}
		for _, p := range a.Paths {
			if isOutDirPath(p) {
				return true
			}
		}
	}
	return false
}

// isOutDirPath reports whether an artifacts:paths entry names the
// provenance directory itself (".cleanroom/", "./.cleanroom", a glob in
// it), or the whole project directory.
func isOutDirPath(p string) bool {
	g, ok := cleanGlob(p)
	if !ok {
		q := strings.TrimSpace(p)
		return q == "." || q == "./"
	}
	return g == OutDir || strings.HasPrefix(g, OutDir+"/") || g == "*" || g == "**"
}

// provenanceMount keeps the written provenance read-only for the stages
// after it (the cache and artifact uploads): they run no job code, but
// they do read job-controlled files (GITLAB_ENV, the cache), and the
// statement must reach GitLab as the driver wrote it. No stage runs
// between the checks here and the mount, so what is checked is what is
// mounted: the directory is still a real directory inside the job's
// builds directory, not something a stage swapped in.
func provenanceMount(job *jobDir, st *JobState) (*sandbox.Mount, error) {
	if _, err := os.Stat(job.file(provenanceMark)); err != nil {
		return nil, nil
	}
	dir := filepath.Join(st.ProjectDir, OutDir)
	if err := checkProjectDir(st); err != nil {
		return nil, fmt.Errorf("the provenance directory was tampered with: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("the provenance directory %s was removed or replaced", dir)
	}
	return &sandbox.Mount{Source: dir, Destination: dir, ReadOnly: true}, nil
}

// signedFile is a signature bundle to write next to the statement.
type signedFile struct {
	name string
	data []byte
}

// signProvenance signs the statement as a DSSE attestation, in the driver
// process: with the admin's key (mode "key"), or keyless with the job's
// SIGSTORE_ID_TOKEN from the trusted job response, which no stage ever
// sees (mode "keyless"). The bundle is written next to the statement.
func (d *Driver) signProvenance(ctx context.Context, statement []byte, resp *Response) (*signedFile, error) {
	cfg := d.Policy.Signing
	cfg.Mode, cfg.Now = d.Policy.SigningMode, d.timeNow
	if cfg.Mode == sign.ModeKeyless {
		tok, _ := resp.Var(SigstoreTokenVariable)
		if tok == "" {
			return nil, fmt.Errorf("signing: the policy signs keyless but the job has no %s; add `id_tokens: {%s: {aud: sigstore}}` to the job", SigstoreTokenVariable, SigstoreTokenVariable)
		}
		cfg.Token = func(context.Context) (string, error) { return tok, nil }
	}
	signer, err := sign.New(ctx, cfg)
	var ce *sign.ConfigError
	switch {
	case errors.As(err, &ce) && ce.Field == "identity_token":
		return nil, fmt.Errorf("signing: %s: %w", SigstoreTokenVariable, ce.Err)
	case err != nil:
		return nil, fmt.Errorf("signing: %w", err)
	case signer == nil:
		return nil, nil
	}
	bundle, err := signer.SignDSSE(ctx, sign.InTotoPayloadType, bytes.TrimSpace(statement))
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	fmt.Fprintf(d.stdout(), "cleanroom: provenance signed by %s\n", signer.Identity())
	return &signedFile{name: ProvenanceBundleFile, data: bundle}, nil
}

// ProvenanceBundleFile is the signed provenance's name in the output dir.
const ProvenanceBundleFile = "provenance.sigstore.json"

// jobSucceeded reports whether the records show a job whose own script
// ran and succeeded: every job-script stage's last record is "ok" (a
// stage whose call died leaves "running"), and no failure-only stage ran.
func jobSucceeded(records []StageRecord) bool {
	last := map[string]string{}
	main := false
	for _, r := range records {
		if IsFailurePostStage(r.Stage) {
			return false
		}
		if IsJobScript(r.Stage) || feedsBuildInput(r.Stage) {
			last[r.Stage] = r.Status
		}
		main = main || (IsJobScript(r.Stage) && r.Stage != StagePrepareScript)
	}
	// The job's own script must have run: after a failed get_sources the
	// runner goes straight to the clean-up stages, and what is in the
	// builds directory then was built by nothing.
	if !main {
		return false
	}
	for _, s := range last {
		if s != "ok" {
			return false
		}
	}
	return true
}

// feedsBuildInput reports whether a stage brings the build's inputs in:
// its last attempt must have succeeded for the build to be what the
// provenance says.
func feedsBuildInput(stage string) bool {
	return stage == StageGetSources || stage == StageRestoreCache || stage == StageDownloadArtifacts
}

// provenanceInput maps the job onto the manifest's plain input.
func (d *Driver) provenanceInput(st *JobState, resp *Response, records []StageRecord, events []egress.Event, subjects []manifest.Subject, info sandbox.Info, egressLog []byte) (manifest.Input, error) {
	configPath, _ := resp.Var("CI_CONFIG_PATH")
	if configPath == "" {
		configPath = ".gitlab-ci.yml"
	}
	invocation, _ := resp.Var("CI_JOB_URL")
	if invocation == "" {
		invocation = manifest.NewInvocationID()
	}
	in := manifest.Input{
		BuilderID:     d.Policy.BuilderID,
		InvocationID:  invocation,
		StartedOn:     st.Prepared,
		FinishedOn:    d.timeNow().UTC(),
		RunnerVersion: orDefault(d.Version, "dev"),
		// GitLab sends the job, not the file it came from: the digest is
		// of the job definition as received (Response.Definition), named
		// by the config file and the job.
		Pipeline:     manifest.File{Path: configPath + "#" + resp.JobInfo.Name, SHA256: st.Definition},
		Flags:        map[string][]string{},
		Egress:       map[string][]string{},
		Subjects:     subjects,
		Dependencies: dependencies(events),
		Environment:  userVariableNames(resp),
	}
	if len(st.Requested) > 0 {
		in.Flags["allow"] = st.Requested
	}
	if commitRE.MatchString(resp.GitInfo.Sha) {
		in.Source.Commit = resp.GitInfo.Sha
		if u, _ := resp.Var("CI_PROJECT_URL"); u != "" {
			in.Source.Remote = u
		}
		in.Source.Ref = resp.GitRef()
	} else {
		tree, _, err := manifest.TreeDigest(context.Background(), st.ProjectDir, 0, manifest.WithExcludes(".git", OutDir))
		if err != nil {
			return in, fmt.Errorf("no commit in the job and the project directory cannot be hashed: %w", err)
		}
		in.Source.TreeSHA256 = tree
	}

	seen := map[string]int{}
	for _, r := range records {
		if r.Status == "running" {
			continue
		}
		name := r.Stage
		seen[r.Stage]++
		if n := seen[r.Stage]; n > 1 {
			name = fmt.Sprintf("%s#%d", r.Stage, n)
		}
		in.Steps = append(in.Steps, name)
		in.Egress[name] = append([]string{}, r.Allow...)
		if r.Digest != "" {
			in.Images = append(in.Images, manifest.Image{Step: name, Ref: r.Image, Digest: r.Digest})
		}
		if hasServices(r.Stage, r.Kind) {
			for _, s := range st.Services {
				in.Images = append(in.Images, manifest.Image{Step: name, Service: s.Alias, Ref: s.Image.Ref, Digest: s.Image.Digest})
			}
		}
		in.Denied = append(in.Denied, runner.Denied(name, r.Denials)...)
	}

	sum := sha256.Sum256(egressLog)
	in.Byproducts = []manifest.Byproduct{{Name: EgressLogFile, SHA256: hex.EncodeToString(sum[:]), Size: int64(len(egressLog))}}

	caps := make([]any, len(info.Capabilities))
	for i, c := range info.Capabilities {
		caps[i] = c
	}
	versions := map[string]any{}
	for k, v := range info.Versions {
		versions[k] = v
	}
	in.Sandbox = map[string]any{
		"backend":         info.Backend,
		"versions":        versions,
		"capabilities":    caps,
		"seccomp":         info.SeccompDigest,
		"noNewPrivileges": info.NoNewPrivs,
		"readonlyRootfs":  info.ReadonlyRootfs,
		"network":         "loopback-only namespace per stage; egress through the recording proxy",
		"limits": map[string]any{
			"memoryBytes": d.Policy.MemoryBytes,
			"cpus":        d.Policy.CPUs,
			"pids":        d.Policy.Pids,
			"tmpBytes":    d.Policy.TmpBytes,
		},
		"executor": "gitlab-custom",
	}
	return in, nil
}

var commitRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// dependencies are the successful fetches of the stages whose fetches feed
// the build (feedsBuild), as the pipeline runner lists them.
func dependencies(events []egress.Event) []manifest.Dependency {
	var feeding []egress.Event
	for _, e := range events {
		if feedsBuild(e.Step) {
			feeding = append(feeding, e)
		}
	}
	return runner.Dependencies(feeding)
}

// userVariableNames lists the names (never values) of the job's own
// variables: everything but GitLab's predefined ones.
func userVariableNames(resp *Response) []string {
	var out []string
	for _, v := range resp.Variables {
		k := v.Key
		if k == "" || strings.HasPrefix(k, "CI_") || strings.HasPrefix(k, "GITLAB_") || strings.HasPrefix(k, "FF_") ||
			!varNameRE.MatchString(k) || slices.Contains(out, k) {
			continue
		}
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// matchJobArtifacts finds the files the job's artifacts:paths name (for
// archives uploaded on success), as GitLab would: a path naming a
// directory means everything below it, globs use ** for any depth,
// artifacts:exclude removes matches. A path matching nothing is a
// warning, as in GitLab; a match that resolves outside the project
// directory is an error (the job planted a symlink to a host file).
func matchJobArtifacts(st *JobState, arts []Artifact) ([]manifest.Subject, []string, error) {
	if _, err := os.Lstat(st.ProjectDir); errors.Is(err, fs.ErrNotExist) {
		// GIT_STRATEGY: none with a script that made nothing, or a job
		// that removed its own directory: nothing to attest.
		var warnings []string
		for _, a := range arts {
			for _, p := range a.Paths {
				if !isOutDirPath(p) {
					warnings = append(warnings, fmt.Sprintf("artifact path %q matched no files (the project directory does not exist)", p))
				}
			}
		}
		return nil, warnings, nil
	}
	if err := checkProjectDir(st); err != nil {
		return nil, nil, err
	}
	var warnings []string
	found := map[string]string{}
	for _, a := range arts {
		if (a.ArtifactType != "" && a.ArtifactType != "archive") || (a.When != "" && a.When != "on_success" && a.When != "always") {
			continue
		}
		if a.Untracked {
			warnings = append(warnings, "artifacts:untracked files are uploaded but not attested; list them under artifacts:paths")
		}
		var excludes []glob.Pattern
		for _, x := range a.Exclude {
			if g, ok := cleanGlob(x); ok {
				if pat, err := glob.Compile(g); err == nil {
					excludes = append(excludes, pat)
				} else {
					warnings = append(warnings, fmt.Sprintf("artifacts:exclude %q is not a valid glob; ignored", x))
				}
			}
		}
		for _, p := range a.Paths {
			if isOutDirPath(p) {
				// The provenance itself: written after this match, never
				// one of its own subjects.
				continue
			}
			g, ok := cleanGlob(p)
			if !ok {
				warnings = append(warnings, fmt.Sprintf("artifact path %q is outside the project directory; not attested", p))
				continue
			}
			if !strings.ContainsAny(g, `*?[\`) {
				if fi, err := os.Stat(filepath.Join(st.ProjectDir, g)); err == nil && fi.IsDir() {
					g += "/**"
				}
			}
			subjects, err := manifest.MatchArtifacts(st.ProjectDir, []string{g})
			if err != nil && strings.Contains(err.Error(), "is a directory") {
				subjects, err = manifest.MatchArtifacts(st.ProjectDir, []string{g + "/**"})
			}
			switch {
			case err != nil && errors.Is(err, manifest.ErrOutsideWorkspace):
				return nil, warnings, err
			case err != nil && strings.Contains(err.Error(), "matched no files"):
				warnings = append(warnings, fmt.Sprintf("artifact path %q matched no files", p))
				continue
			case err != nil:
				return nil, warnings, err
			}
			for _, s := range subjects {
				if s.Name == OutDir || strings.HasPrefix(s.Name, OutDir+"/") || excluded(s.Name, excludes) {
					continue
				}
				found[s.Name] = s.SHA256
			}
		}
	}
	out := make([]manifest.Subject, 0, len(found))
	for name, sum := range found {
		out = append(out, manifest.Subject{Name: name, SHA256: sum})
	}
	slices.SortFunc(out, func(a, b manifest.Subject) int { return strings.Compare(a.Name, b.Name) })
	return out, warnings, nil
}

// cleanGlob normalises a GitLab artifact path ("./out/", "out") to the
// relative glob form MatchArtifacts takes; ok is false for paths that
// leave the project directory.
func cleanGlob(p string) (string, bool) {
	p = strings.TrimSpace(p)
	for strings.HasPrefix(p, "./") {
		p = p[2:]
	}
	p = strings.TrimRight(p, "/")
	if p == "" || p == "." || path.IsAbs(p) {
		return "", false
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." {
			return "", false
		}
	}
	return path.Clean(p), true
}

// excluded reports whether an artifacts:exclude glob matches name or a
// directory above it (internal/glob: "**" any number of directories, "*"
// within one).
func excluded(name string, excludes []glob.Pattern) bool {
	for _, g := range excludes {
		if g.MatchOrUnder(name) {
			return true
		}
	}
	return false
}

// checkProjectDir makes sure CI_PROJECT_DIR, as it is now, resolves
// inside the job's builds directory: a stage could have replaced it with
// a symlink to anywhere on the host.
func checkProjectDir(st *JobState) error {
	root, err := filepath.EvalSymlinks(st.BuildsDir)
	if err != nil {
		return err
	}
	real, err := filepath.EvalSymlinks(st.ProjectDir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("the project directory %s does not exist", st.ProjectDir)
	}
	if err != nil {
		return err
	}
	if real != root && !strings.HasPrefix(real, root+string(filepath.Separator)) {
		return fmt.Errorf("the project directory %s %w (%s)", st.ProjectDir, manifest.ErrOutsideWorkspace, real)
	}
	return nil
}

// writeOutputs replaces CI_PROJECT_DIR/.cleanroom with a fresh directory
// holding files. Every path is opened through os.Root from the job's
// builds directory, which refuses symlinks leading out of it: the driver
// is root on the host and the directory is the job's to shape, so a
// planted `.cleanroom -> /etc` must not turn into a write to /etc. The
// old directory is removed first so nothing a stage put there (a forged
// statement) is uploaded as if the runner wrote it.
func writeOutputs(st *JobState, files map[string][]byte) error {
	rel, err := filepath.Rel(st.BuildsDir, st.ProjectDir)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return fmt.Errorf("the project directory %s is not inside the job's builds directory", st.ProjectDir)
	}
	root, err := os.OpenRoot(st.BuildsDir)
	if err != nil {
		return err
	}
	defer root.Close()
	if err := root.MkdirAll(rel, 0o777); err != nil {
		return fmt.Errorf("project directory: %w", err)
	}
	proj, err := root.OpenRoot(rel)
	if err != nil {
		return fmt.Errorf("project directory: %w", err)
	}
	defer proj.Close()
	if err := proj.RemoveAll(OutDir); err != nil {
		return err
	}
	if err := proj.Mkdir(OutDir, 0o755); err != nil {
		return err
	}
	out, err := proj.OpenRoot(OutDir)
	if err != nil {
		return err
	}
	defer out.Close()
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		data := files[name]
		if err := atomicfile.WriteIn(out, name, 0o644, func(w io.Writer) error { _, err := w.Write(data); return err }); err != nil {
			return err
		}
	}
	return nil
}
