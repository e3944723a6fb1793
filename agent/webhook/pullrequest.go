package webhook

import (
	"fmt"
	"strconv"
)

// Pull requests (GitHub) and merge requests (GitLab). The head commit is
// fetched from the hook's own repository through the ref the forge keeps
// there for every request, forks included (refs/pull/N/head,
// refs/merge-requests/N/head): the agent still clones only the configured
// repository.

type githubPR struct {
	Action      string `json:"action"`
	Number      int    `json:"number"`
	PullRequest struct {
		Head struct {
			SHA  string `json:"sha"`
			Repo *struct {
				FullName string `json:"full_name"`
			} `json:"repo"`
		} `json:"head"`
		Base struct {
			Ref  string `json:"ref"`
			Repo struct {
				FullName string `json:"full_name"`
				CloneURL string `json:"clone_url"`
				HTMLURL  string `json:"html_url"`
			} `json:"repo"`
		} `json:"base"`
	} `json:"pull_request"`
	Sender struct {
		Login string `json:"login"`
	} `json:"sender"`
}

func parseGitHubPR(body []byte, hook Hook, delivery string) (Push, error) {
	var p githubPR
	if err := decode(body, &p); err != nil {
		return Push{}, fmt.Errorf("webhook %q: %v", hook.Name, err)
	}
	switch p.Action {
	case "opened", "synchronize", "reopened":
	default:
		return Push{}, ignored("pull request action %q changes no code", clean(p.Action, 64))
	}
	if p.Number <= 0 {
		return Push{}, fmt.Errorf("webhook %q: the pull request has no number", hook.Name)
	}
	pr := p.PullRequest
	// A head repository that is gone (a deleted fork) is a fork too.
	fork := pr.Head.Repo == nil || pr.Head.Repo.FullName != pr.Base.Repo.FullName
	urls := []string{pr.Base.Repo.CloneURL}
	if pr.Base.Repo.HTMLURL != "" {
		urls = append(urls, pr.Base.Repo.HTMLURL+".git")
	}
	return finish(hook, Push{
		Provider:    GitHub,
		Ref:         "refs/pull/" + strconv.Itoa(p.Number) + "/head",
		BaseRef:     "refs/heads/" + pr.Base.Ref,
		Commit:      pr.Head.SHA,
		Pusher:      clean(p.Sender.Login, 256),
		DeliveryID:  delivery,
		PullRequest: p.Number,
		Fork:        fork,
	}, urls, false)
}

type gitlabMR struct {
	ObjectKind string `json:"object_kind"`
	User       struct {
		Username string `json:"username"`
	} `json:"user"`
	Project struct {
		GitHTTPURL string `json:"git_http_url"`
		WebURL     string `json:"web_url"`
	} `json:"project"`
	Attrs struct {
		IID             int    `json:"iid"`
		Action          string `json:"action"`
		SourceProjectID int    `json:"source_project_id"`
		TargetProjectID int    `json:"target_project_id"`
		TargetBranch    string `json:"target_branch"`
		LastCommit      struct {
			ID string `json:"id"`
		} `json:"last_commit"`
	} `json:"object_attributes"`
}

func parseGitLabMR(body []byte, hook Hook, delivery string) (Push, error) {
	var p gitlabMR
	if err := decode(body, &p); err != nil {
		return Push{}, fmt.Errorf("webhook %q: %v", hook.Name, err)
	}
	if p.ObjectKind != "merge_request" {
		return Push{}, ignored("object_kind %q is not a merge request", clean(p.ObjectKind, 64))
	}
	switch p.Attrs.Action {
	case "open", "update", "reopen":
	default:
		return Push{}, ignored("merge request action %q changes no code", clean(p.Attrs.Action, 64))
	}
	if p.Attrs.IID <= 0 {
		return Push{}, fmt.Errorf("webhook %q: the merge request has no iid", hook.Name)
	}
	return finish(hook, Push{
		Provider:    GitLab,
		Ref:         "refs/merge-requests/" + strconv.Itoa(p.Attrs.IID) + "/head",
		BaseRef:     "refs/heads/" + p.Attrs.TargetBranch,
		Commit:      p.Attrs.LastCommit.ID,
		Pusher:      clean(p.User.Username, 256),
		DeliveryID:  delivery,
		PullRequest: p.Attrs.IID,
		Fork:        p.Attrs.SourceProjectID != p.Attrs.TargetProjectID,
	}, []string{p.Project.GitHTTPURL, p.Project.WebURL}, false)
}
