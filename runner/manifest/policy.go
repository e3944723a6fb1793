package manifest

import (
	"fmt"
	"os"

	"github.com/goccy/go-yaml"
)

// Policy is what a consumer requires of a build beyond "these artifacts are
// the ones attested". The zero Policy requires nothing more.
//
// In YAML:
//
//	builderId: https://ci.example.com/cleanroom@v1
//	sourceRepo: https://github.com/org/repo
//	noDeniedEgress: true
//	allDependenciesDigested: true
//	imagesPinned: true
//	freshWorkspace: true
type Policy struct {
	// BuilderID, when set, must equal runDetails.builder.id exactly.
	BuilderID string `yaml:"builderId" json:"builderId,omitempty"`
	// SourceRepo, when set, must name the recorded git remote. Scheme,
	// credentials, a trailing ".git" or "/" and host case are ignored, so
	// https://github.com/org/repo matches git@github.com:org/repo.git.
	SourceRepo string `yaml:"sourceRepo" json:"sourceRepo,omitempty"`
	// NoDeniedEgress requires that the proxy refused no connection: a
	// refused fetch often means the build quietly took another path.
	NoDeniedEgress bool `yaml:"noDeniedEgress" json:"noDeniedEgress,omitempty"`
	// AllDependenciesDigested requires a content digest for every fetch,
	// which rules out opaque tunnels.
	AllDependenciesDigested bool `yaml:"allDependenciesDigested" json:"allDependenciesDigested,omitempty"`
	// ImagesPinned requires every image to be referenced by digest
	// (…@sha256:<hex>) in the pipeline, not by a movable tag. Archive
	// references (oci-archive:, docker-archive:) count as pinned: the
	// archive is a file of the source.
	ImagesPinned bool `yaml:"imagesPinned" json:"imagesPinned,omitempty"`
	// NoUndeclaredFetches requires that every package the build fetched
	// (Go module, npm tarball) is declared in a lockfile of the source
	// (go.sum, package-lock.json); see internalParameters.lockfileCheck.
	NoUndeclaredFetches bool `yaml:"noUndeclaredFetches" json:"noUndeclaredFetches,omitempty"`
	// NoHashMismatches requires that every fetched package hashes to what
	// the lockfile declares for it.
	NoHashMismatches bool `yaml:"noHashMismatches" json:"noHashMismatches,omitempty"`
	// FreshWorkspace requires that the steps ran in a copy of the source
	// made for the run (internalParameters.workspace.mode "fresh"), not in
	// a reused live directory where an earlier run or a local build could
	// have left the files that were attested.
	FreshWorkspace bool `yaml:"freshWorkspace" json:"freshWorkspace,omitempty"`
	// RequireRuntime, when set, must equal the OCI runtime the steps ran
	// under (internalParameters.sandbox.runtime: runc, crun, runsc).
	RequireRuntime string `yaml:"requireRuntime" json:"requireRuntime,omitempty"`
}

// LoadPolicy reads a policy from YAML. Unknown and duplicate keys are
// errors, so that a misspelt rule fails loudly instead of being skipped.
func LoadPolicy(path string) (Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Policy{}, fmt.Errorf("manifest: %w", err)
	}
	var p Policy
	if err := yaml.UnmarshalWithOptions(data, &p, yaml.Strict()); err != nil {
		return Policy{}, fmt.Errorf("manifest: policy %s: %w", path, err)
	}
	return p, nil
}
