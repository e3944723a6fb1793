package runner

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/cleanroom-ci/cleanroom/runner/manifest"
	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
)

// ProvenanceFile is the in-toto statement's name in the output directory.
const ProvenanceFile = "provenance.intoto.json"

// inputs are what the run looked at before its first step: recorded then,
// so a step cannot change what the provenance says went in.
type inputs struct {
	source       manifest.Source
	pipelinePath string
}

// snapshotInputs hashes the tree the steps will see (the fresh copy, or
// the live directory when reused) and reads git metadata of the source.
func snapshotInputs(ctx context.Context, cfg Config) (inputs, error) {
	var in inputs
	tree, err := workspaceDigest(ctx, cfg)
	if err != nil {
		return in, fmt.Errorf("hash workspace: %w", err)
	}
	in.source = gitSource(cfg.Workspace)
	in.source.TreeSHA256 = tree
	in.pipelinePath = cfg.Pipeline.Path
	if abs, err := filepath.Abs(cfg.Pipeline.Path); err == nil {
		if rel, err := filepath.Rel(cfg.Workspace, abs); err == nil && !strings.HasPrefix(rel, "..") {
			in.pipelinePath = filepath.ToSlash(rel)
		}
	}
	return in, nil
}

// workspaceDigest is the tree digest of the workspace the steps see,
// without .git and (in a reused workspace) the output directory.
func workspaceDigest(ctx context.Context, cfg Config) (string, error) {
	excludes := []string{".git"}
	if rel, err := filepath.Rel(cfg.Workspace, cfg.OutDir); cfg.ws.Mode == WorkspaceReused && err == nil && !strings.HasPrefix(rel, "..") && rel != "." {
		excludes = append(excludes, filepath.ToSlash(rel))
	}
	tree, _, err := manifest.TreeDigest(ctx, cfg.ws.Dir, 0, manifest.WithExcludes(excludes...))
	return tree, err
}

var commitRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// gitSource reads the remote, commit and ref of the repository the
// workspace is in, if any; git is run outside any sandbox, read-only.
func gitSource(dir string) manifest.Source {
	git := func(args ...string) string {
		cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1")
		out, err := cmd.Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}
	commit := git("rev-parse", "--verify", "-q", "HEAD")
	if !commitRE.MatchString(commit) {
		return manifest.Source{}
	}
	return manifest.Source{
		Commit: commit,
		Remote: git("config", "--get", "remote.origin.url"),
		Ref:    git("symbolic-ref", "-q", "HEAD"),
	}
}

// provenanceInput turns the run into the manifest's plain input.
func provenanceInput(cfg Config, res *Result, in inputs, subjects []manifest.Subject, byproducts []manifest.Byproduct) manifest.Input {
	p := cfg.Pipeline
	mi := manifest.Input{
		BuilderID:     cfg.BuilderID,
		InvocationID:  cfg.InvocationID,
		StartedOn:     res.Started,
		FinishedOn:    res.Finished,
		RunnerVersion: cfg.Version,
		Pipeline:      manifest.File{Path: in.pipelinePath, SHA256: p.Digest},
		Source:        in.source,
		Flags:         map[string][]string{},
		Egress:        map[string][]string{},
		Subjects:      subjects,
		Byproducts:    byproducts,
		FailedStep:    res.Failed,
	}
	if mi.InvocationID == "" {
		mi.InvocationID = manifest.NewInvocationID()
	}
	if len(cfg.ExtraAllow) > 0 {
		mi.Flags["allow"] = cfg.ExtraAllow
	}
	if len(cfg.Steps) > 0 {
		mi.Flags["step"] = cfg.Steps
	}
	if cfg.EgressMode != "" {
		mi.Flags["egress-mode"] = []string{cfg.EgressMode}
	}
	recordedFlags(cfg, mi.Flags) // rebuild.go
	limits := map[string]any{}
	for _, s := range res.Steps {
		mi.Steps = append(mi.Steps, s.Name)
		if s.Status == "skipped" {
			continue
		}
		mi.Egress[s.Name] = append([]string{}, s.Allow...)
		mi.Denied = append(mi.Denied, Denied(s.Name, s.Denials)...)
	}
	for _, s := range p.Steps {
		if _, ran := mi.Egress[s.Name]; ran {
			limits[s.Name] = map[string]any{
				"memoryBytes":    s.Resources.MemoryBytes,
				"cpus":           s.Resources.CPUs,
				"pids":           s.Resources.Pids,
				"timeoutSeconds": s.Timeout.Seconds(),
			}
			// A service's limits and egress, under "<step>/<alias>".
			for _, svc := range p.StepServices(s) {
				name := s.Name + "/" + svc.Alias
				limits[name] = map[string]any{
					"memoryBytes": svc.Resources.MemoryBytes,
					"cpus":        svc.Resources.CPUs,
					"pids":        svc.Resources.Pids,
				}
				if len(svc.Allow) > 0 {
					mi.Egress[name] = append([]string{}, svc.Allow...)
				}
			}
		}
	}
	for _, img := range res.Images {
		for _, st := range img.Steps {
			mi.Images = append(mi.Images, manifest.Image{Step: st, Ref: img.Ref, Digest: img.Digest})
		}
		for _, sv := range img.Services {
			mi.Images = append(mi.Images, manifest.Image{Step: sv.Step, Service: sv.Alias, Ref: img.Ref, Digest: img.Digest})
		}
	}
	mi.Dependencies = Dependencies(res.Events)
	mi.Internal = materialsInternal(cfg, res) // inspect.go
	if cfg.ws != nil {
		// Whether the steps started from a copy of the source made for
		// this run; verify's freshWorkspace policy refuses "reused".
		mi.Internal["workspace"] = map[string]any{"mode": cfg.ws.Mode, "hermetic": cfg.ws.Mode == WorkspaceFresh}
	}
	rebuildInternal(cfg, res, mi.Internal) // rebuild.go
	mi.Byproducts = append(mi.Byproducts, stepByproducts(res)...)
	mi.Environment = envNames(p)
	caps := res.Sandbox.Capabilities
	if caps == nil {
		caps = []string{}
	}
	capsAny := make([]any, len(caps))
	for i, c := range caps {
		capsAny[i] = c
	}
	versions := map[string]any{}
	for k, v := range res.Sandbox.Versions {
		versions[k] = v
	}
	mi.Sandbox = map[string]any{
		"backend":         res.Sandbox.Backend,
		"runtime":         res.Sandbox.Runtime,
		"runtimeVersion":  res.Sandbox.RuntimeVersion,
		"userNamespace":   res.Sandbox.UserNamespace,
		"versions":        versions,
		"capabilities":    capsAny,
		"seccomp":         res.Sandbox.SeccompDigest,
		"noNewPrivileges": res.Sandbox.NoNewPrivs,
		"readonlyRootfs":  res.Sandbox.ReadonlyRootfs,
		"network":         "loopback-only namespace; egress through the recording proxy",
		"limits":          limits,
	}
	return mi
}

// Dependencies are the successful fetches the proxy recorded: bodies with
// their digest (plain HTTP, module proxy, inspected HTTPS) and opaque
// tunnels by host:port. A tunnel whose upstream dial failed (502) carried
// nothing; an inspected tunnel's requests are listed one by one instead.
// The GitLab driver uses it too, on the events of the stages that feed the
// build.
func Dependencies(events []egress.Event) []manifest.Dependency {
	var deps []manifest.Dependency
	for _, e := range events {
		if e.Decision == egress.DecisionDeny {
			continue
		}
		switch {
		case e.Method == "CONNECT" && e.Inspected:
			// TLS inspected: its requests are recorded one by one.
		case e.Method == "CONNECT" && e.Status == 200:
			deps = append(deps, manifest.Dependency{
				Step: e.Step, URL: net.JoinHostPort(e.Host, strconv.Itoa(e.Port)),
				Method: e.Method, BytesIn: e.BytesIn, BytesOut: e.BytesOut,
			})
		case e.URL != "" && e.Status >= 200 && e.Status < 300:
			deps = append(deps, manifest.Dependency{
				Step: e.Step, URL: e.URL, SHA256: e.SHA256, Size: e.Size,
				Method: e.Method, BytesIn: e.BytesIn, BytesOut: e.BytesOut,
				Module: e.Module, Version: e.Version,
			})
		}
	}
	return deps
}

// envNames lists the variables the pipeline sets, by name only.
func envNames(p *pipeline.Pipeline) []string {
	seen := map[string]bool{}
	for k := range p.Env {
		seen[k] = true
	}
	for _, s := range p.Steps {
		for k := range s.Env {
			seen[k] = true
		}
		for _, svc := range p.StepServices(s) {
			for k := range svc.Env {
				seen[k] = true
			}
		}
	}
	for _, svc := range p.Services {
		for k := range svc.Env {
			seen[k] = true
		}
	}
	names := make([]string, 0, len(seen))
	for k := range seen {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// Denied turns a step's proxy denials into provenance entries; the GitLab
// driver uses it too.
func Denied(step string, denials []egress.Denial) []manifest.Denied {
	var out []manifest.Denied
	for _, d := range denials {
		host, port := splitTarget(d.Target)
		if host == "" {
			// Rejected before a destination could be read (malformed or
			// smuggling requests).
			host = "(malformed request)"
		}
		out = append(out, manifest.Denied{Step: step, Host: host, Port: port, Reason: d.Reason, Count: max(d.Count, 1)})
	}
	return out
}

func splitTarget(t string) (string, int) {
	host, port, err := net.SplitHostPort(t)
	if err != nil {
		return t, 0
	}
	n, _ := strconv.Atoi(port)
	return host, n
}

// byproducts hashes the files the run wrote to its staging directory.
func byproducts(stage string) ([]manifest.Byproduct, error) {
	var out []manifest.Byproduct
	err := filepath.Walk(stage, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(stage, path)
		if fi.IsDir() {
			if rel == "empty" || rel == privateDir {
				return filepath.SkipDir
			}
			return nil
		}
		if rel == ProvenanceFile {
			return nil
		}
		sum, size, err := manifest.HashFile(path)
		if err != nil {
			return err
		}
		out = append(out, manifest.Byproduct{Name: filepath.ToSlash(rel), SHA256: sum, Size: size})
		return nil
	})
	return out, err
}
