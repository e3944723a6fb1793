package gitlab

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// The helper stages (get_sources, cache, artifacts) can reach GitLab with
// the job token, so nothing of the job's may run there. gitlab-runner
// writes every job variable into their scripts too, and many variables
// make git, the shell or the dynamic loader run something: GIT_CONFIG_*
// (core.fsmonitor, core.sshCommand, credential.helper…),
// GIT_CONFIG_PARAMETERS, GIT_SSH_COMMAND, GIT_ASKPASS, SSH_ASKPASS,
// GIT_PROXY_COMMAND, GIT_EXEC_PATH, GIT_TEMPLATE_DIR, GIT_DIR, PATH,
// LD_PRELOAD, LD_LIBRARY_PATH, BASH_ENV, ENV, PROMPT_COMMAND, …. The list
// grows with every git release, so it is not a deny list: a helper
// stage keeps only the job variables that are GitLab's own settings
// for the runner's helper commands, and loses every other.

// helperVariablePrefixes are the prefixes of variables the helper stages
// keep: GitLab's predefined variables and feature flags, and the
// settings of the cache and artifact helpers.
var helperVariablePrefixes = []string{"CI_", "GITLAB_", "FF_", "CACHE_", "ARTIFACT_", "ARTIFACTS_", "RUNNER_"}

// helperVariables are the documented job variables that tune the
// runner's source, cache and artifact handling (data, never commands).
var helperVariables = []string{
	"GIT_STRATEGY", "GIT_DEPTH", "GIT_CHECKOUT", "GIT_CLEAN_FLAGS",
	"GIT_FETCH_EXTRA_FLAGS", "GIT_CLONE_EXTRA_FLAGS",
	"GIT_SUBMODULE_STRATEGY", "GIT_SUBMODULE_DEPTH", "GIT_SUBMODULE_PATHS",
	"GIT_SUBMODULE_UPDATE_FLAGS", "GIT_SUBMODULE_FORCE_HTTPS",
	"GIT_LFS_SKIP_SMUDGE", "GET_SOURCES_ATTEMPTS", "RESTORE_CACHE_ATTEMPTS",
	"ARTIFACT_DOWNLOAD_ATTEMPTS", "EXECUTOR_JOB_SECTION_ATTEMPTS",
	"TRANSFER_METER_FREQUENCY",
}

// HelperVariableAllowed reports whether a job variable reaches the helper
// stages' scripts.
func HelperVariableAllowed(key string) bool {
	if slices.Contains(helperVariables, key) {
		return true
	}
	for _, p := range helperVariablePrefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// helperDroppedKeys are the keys whose statements are cut from a helper
// stage's script: every job variable HelperVariableAllowed refuses, and
// the runner-only ones.
func helperDroppedKeys(resp *Response, runnerOnly []string) []string {
	keys := append([]string{}, runnerOnly...)
	for _, v := range resp.Variables {
		if v.Key != "" && !HelperVariableAllowed(v.Key) && !slices.Contains(keys, v.Key) {
			keys = append(keys, v.Key)
		}
	}
	return keys
}

// helperGitEnv is set in every helper stage: whatever repository
// configuration a job stage wrote into the project's .git (which a
// later helper stage's git reads: artifacts:untracked runs git ls-files
// there), git in a helper stage runs no fsmonitor and no hook. The
// variables are git's command-line scope, above the repository's.
var helperGitEnv = []string{
	"GIT_CONFIG_COUNT=2",
	"GIT_CONFIG_KEY_0=core.fsmonitor", "GIT_CONFIG_VALUE_0=false",
	"GIT_CONFIG_KEY_1=core.hooksPath", "GIT_CONFIG_VALUE_1=/dev/null",
}

// touchesRepository reports whether a helper stage runs git on the
// project directory as it finds it.
func touchesRepository(stage string) bool {
	return stage == StageGetSources || stage == StageClearWorktree
}

// clearAfterJobStages empties the job's builds directory when a stage of
// the job's own ran since the last helper stage. Only prepare_script can
// (it runs in the job image, before the sources are fetched, and has
// nothing to leave): a job image must not plant a .git/config,
// .git/hooks or a git template for the helper's git to run.
func clearAfterJobStages(job *jobDir, st *JobState) error {
	records, err := job.stages()
	if err != nil {
		return err
	}
	dirty := false
	for _, r := range records {
		dirty = r.Kind == KindUser
	}
	if !dirty {
		return nil
	}
	ents, err := os.ReadDir(st.BuildsDir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		// RemoveAll removes a symlink itself, never what it points to.
		if err := os.RemoveAll(filepath.Join(st.BuildsDir, e.Name())); err != nil {
			return fmt.Errorf("clearing the builds directory before the sources are fetched: %w", err)
		}
	}
	return nil
}
