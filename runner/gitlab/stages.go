package gitlab

import (
	"strings"
)

// Kind says where a stage runs.
type Kind string

const (
	// KindUser stages run the job's own code: the job image, egress only
	// to the job's effective allowlist. No credential for GitLab's API
	// beyond what the job's script itself carries, and no route to it.
	KindUser Kind = "user"
	// KindHelper stages talk to GitLab (sources, cache, artifacts): the
	// admin's helper image, egress only to the GitLab instance (plus the
	// policy's helper.allow). They never run the job's code; they move
	// files between GitLab and the builds directory.
	KindHelper Kind = "helper"
	// KindHelperOffline stages only tidy the builds directory: helper
	// image, no egress at all.
	KindHelperOffline Kind = "helper-offline"
)

// Stage names gitlab-runner sends to run_exec (see the custom executor
// contract). build_script is what the runner still sends for step_script.
const (
	StagePrepareScript            = "prepare_script"
	StageGetSources               = "get_sources"
	StageClearWorktree            = "clear_worktree"
	StageRestoreCache             = "restore_cache"
	StageDownloadArtifacts        = "download_artifacts"
	StageBuildScript              = "build_script"
	StageAfterScript              = "after_script"
	StageArchiveCache             = "archive_cache"
	StageArchiveCacheOnFailure    = "archive_cache_on_failure"
	StageUploadArtifactsOnSuccess = "upload_artifacts_on_success"
	StageUploadArtifactsOnFailure = "upload_artifacts_on_failure"
	StageCleanupFileVariables     = "cleanup_file_variables"

	stepPrefix = "step_"
)

// Route says where a stage runs. Unknown stage names (the runner adds
// stages over time) run as user stages: that is the least privileged
// place, with no route to GitLab and no secrets but the job's own.
func Route(stage string) Kind {
	switch stage {
	case StageGetSources, StageClearWorktree, StageRestoreCache, StageDownloadArtifacts,
		StageArchiveCache, StageArchiveCacheOnFailure,
		StageUploadArtifactsOnSuccess, StageUploadArtifactsOnFailure:
		return KindHelper
	case StageCleanupFileVariables:
		return KindHelperOffline
	}
	return KindUser
}

// IsJobScript reports whether a stage is the job's main script, whose
// outcome decides the job's (after_script failures do not count).
func IsJobScript(stage string) bool {
	return stage == StagePrepareScript || stage == StageBuildScript || strings.HasPrefix(stage, stepPrefix)
}

// IsProvenancePoint reports whether the provenance is due before this
// stage runs, provided the job script succeeded: the first stage after the
// job's own code that gitlab-runner sends on success, and before the
// artifacts (which should include the provenance) are uploaded.
func IsProvenancePoint(stage string) bool {
	return stage == StageArchiveCache || stage == StageUploadArtifactsOnSuccess || stage == StageCleanupFileVariables
}

// IsFailurePostStage reports whether the stage is sent only after the job
// script failed or was cancelled.
func IsFailurePostStage(stage string) bool {
	return stage == StageArchiveCacheOnFailure || stage == StageUploadArtifactsOnFailure
}

// feedsBuild reports whether what a stage fetches becomes input of the
// build (so its fetches belong in the provenance's materials): the user
// stages, and the helper stages that bring cache and artifacts of other
// jobs in. Sources are recorded as the commit instead; the post-build
// stages only send outputs.
func feedsBuild(stage string) bool {
	return Route(stage) == KindUser || stage == StageRestoreCache || stage == StageDownloadArtifacts
}

// maxStageNameLen bounds a stage name, which ends up in container ids.
const maxStageNameLen = 100

// validStageName accepts what the runner sends and nothing that could
// play tricks in a container id or a file name. prepare_executor and
// resolve_secrets are trace-section names the runner never sends.
func validStageName(stage string) bool {
	if stage == "" || len(stage) > maxStageNameLen || stage == "prepare_executor" || stage == "resolve_secrets" {
		return false
	}
	for _, c := range stage {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.'
		if !ok {
			return false
		}
	}
	return stage[0] != '.' && stage[0] != '-'
}
