package webhook

import (
	"fmt"
	"testing"
)

func githubPRBody(action, headRepo string) string {
	head := `null`
	if headRepo != "" {
		head = fmt.Sprintf(`{"full_name": %q}`, headRepo)
	}
	return fmt.Sprintf(`{"action": %q, "number": 7, "pull_request": {"head": {"sha": %q, "repo": %s},
	  "base": {"ref": "main", "repo": {"full_name": "acme/widget", "clone_url": %q}}}, "sender": {"login": "mallory"}}`, action, sha, head, repo)
}

func TestGitHubPullRequest(t *testing.T) {
	h := githubHook()
	if _, err := Parse(githubReq("pull_request", githubPRBody("opened", "mallory/widget"), secret), h, 0); err == nil {
		t.Fatal("a hook without pull_requests built a pull request")
	} else {
		wantIgnored(t, err, "pull_requests: false")
	}
	h.PullRequests = true
	for _, tc := range []struct {
		head string
		fork bool
	}{{"mallory/widget", true}, {"acme/widget", false}, {"", true}} {
		p, err := Parse(githubReq("pull_request", githubPRBody("synchronize", tc.head), secret), h, 0)
		if err != nil {
			t.Fatal(err)
		}
		if p.Ref != "refs/pull/7/head" || p.BaseRef != "refs/heads/main" || p.Commit != sha || p.PullRequest != 7 || p.Fork != tc.fork || p.Repository != repo || p.Pusher != "mallory" {
			t.Fatalf("head %q: %+v", tc.head, p)
		}
	}
	_, err := Parse(githubReq("pull_request", githubPRBody("labeled", "mallory/widget"), secret), h, 0)
	wantIgnored(t, err, `action "labeled"`)
	// The base branch must match the hook's refs.
	h.Refs = []string{"refs/heads/release/*"}
	_, err = Parse(githubReq("pull_request", githubPRBody("opened", "mallory/widget"), secret), h, 0)
	wantIgnored(t, err, "refs/heads/main matches none")
}

func TestGitLabMergeRequest(t *testing.T) {
	h := gitlabHook()
	h.PullRequests = true
	body := fmt.Sprintf(`{"object_kind": "merge_request", "user": {"username": "eve"}, "project": {"git_http_url": %q},
	  "object_attributes": {"iid": 3, "action": "open", "source_project_id": 99, "target_project_id": 1, "target_branch": "main", "last_commit": {"id": %q}}}`, repo, sha)
	p, err := Parse(gitlabReq("Merge Request Hook", body, string(secret)), h, 0)
	if err != nil {
		t.Fatal(err)
	}
	if p.Ref != "refs/merge-requests/3/head" || p.BaseRef != "refs/heads/main" || p.Commit != sha || !p.Fork || p.PullRequest != 3 || p.Pusher != "eve" {
		t.Fatalf("%+v", p)
	}
}
