package gitlab

import (
	"regexp"
	"strings"
	"testing"
)

func TestRoute(t *testing.T) {
	for stage, want := range map[string]Kind{
		"prepare_script":              KindUser,
		"get_sources":                 KindHelper,
		"clear_worktree":              KindHelper,
		"restore_cache":               KindHelper,
		"download_artifacts":          KindHelper,
		"build_script":                KindUser,
		"step_script":                 KindUser,
		"step_release":                KindUser,
		"after_script":                KindUser,
		"archive_cache":               KindHelper,
		"archive_cache_on_failure":    KindHelper,
		"upload_artifacts_on_success": KindHelper,
		"upload_artifacts_on_failure": KindHelper,
		"cleanup_file_variables":      KindHelperOffline,
		// Unknown stages get the least privilege: no GitLab, no cache.
		"some_future_stage":          KindUser,
		"upload_artifacts_elsewhere": KindUser,
	} {
		if got := Route(stage); got != want {
			t.Errorf("Route(%q) = %s, want %s", stage, got, want)
		}
	}
}

func TestStagePredicates(t *testing.T) {
	for _, s := range []string{"prepare_script", "build_script", "step_release"} {
		if !IsJobScript(s) {
			t.Errorf("%s is the job's script", s)
		}
	}
	for _, s := range []string{"after_script", "get_sources", "archive_cache"} {
		if IsJobScript(s) {
			t.Errorf("%s is not the job's script", s)
		}
	}
	for _, s := range []string{"archive_cache", "upload_artifacts_on_success", "cleanup_file_variables"} {
		if !IsProvenancePoint(s) {
			t.Errorf("%s is a provenance point", s)
		}
	}
	for _, s := range []string{"after_script", "upload_artifacts_on_failure", "build_script"} {
		if IsProvenancePoint(s) {
			t.Errorf("%s is not a provenance point", s)
		}
	}
	if !feedsBuild("restore_cache") || !feedsBuild("build_script") || feedsBuild("get_sources") || feedsBuild("upload_artifacts_on_success") {
		t.Error("feedsBuild")
	}
}

func TestValidStageName(t *testing.T) {
	for _, s := range []string{"build_script", "step_my-job.1", "get_sources"} {
		if !validStageName(s) {
			t.Errorf("%q rejected", s)
		}
	}
	for _, s := range []string{"", "prepare_executor", "resolve_secrets", "../x", "a b", "-x", ".x", strings.Repeat("a", 101), "step_ü"} {
		if validStageName(s) {
			t.Errorf("%q accepted", s)
		}
	}
}

// containerd identifiers: alphanumerics separated by single . _ or -, at
// most 76 characters.
var identifierRE = regexp.MustCompile(`^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$`)

func TestSandboxID(t *testing.T) {
	for _, stage := range []string{"build_script", "step__double__sep", strings.Repeat("x", 100), "step_a-", "upload_artifacts_on_success"} {
		id := sandboxID("0123456789ab", 123456789012, stage)
		if len(id) > 76 || !identifierRE.MatchString(id) || !strings.HasPrefix(id, "cr-0123456789ab-") {
			t.Errorf("sandboxID(%q) = %q", stage, id)
		}
	}
}
