// Package forge reports a job's state back to the forge that holds the
// commit, as a commit status: GitHub's, GitLab's or Gitea's (and
// Forgejo's) API, each in its own dialect. The agent posts pending when a
// job starts and success, failure or error when it ends, with a link to
// the job's page; the forge shows it on the commit and the merge or pull
// request.
package forge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Kinds of forge API.
const (
	GitHub = "github"
	GitLab = "gitlab"
	Gitea  = "gitea" // Gitea and Forgejo
)

// States of a commit status, in cleanroom's terms; each API spells them
// its own way.
const (
	Pending = "pending"
	Running = "running"
	Success = "success"
	Failure = "failure" // a step failed
	Error   = "error"   // configuration or infrastructure
	Cancel  = "cancelled"
)

// Reporter posts commit statuses to one repository on one forge.
type Reporter struct {
	Kind string
	// API is the API's base URL: https://api.github.com (GitHub
	// Enterprise: https://HOST/api/v3), https://HOST/api/v4 (GitLab),
	// https://HOST/api/v1 (Gitea, Forgejo).
	API string
	// Repository is "owner/name" (GitHub, Gitea) or the project's path or
	// numeric id (GitLab).
	Repository string
	// TokenFile holds the API token, read at each post (rotate without a
	// restart); it never reaches a job.
	TokenFile string
	// Context names the status on the commit (default "cleanroom").
	Context string
	Client  *http.Client
}

// Check validates the reporter's settings.
func (r *Reporter) Check() error {
	switch r.Kind {
	case GitHub, GitLab, Gitea:
	default:
		return fmt.Errorf("status.kind %q: use github, gitlab or gitea", r.Kind)
	}
	u, err := url.Parse(r.API)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return fmt.Errorf("status.api %q: the API's http(s) base URL, without credentials", r.API)
	}
	if r.Repository == "" || strings.Contains(r.Repository, "..") || (r.Kind != GitLab && strings.Count(r.Repository, "/") != 1) {
		return fmt.Errorf("status.repository %q: owner/name (for GitLab, the project's path or id)", r.Repository)
	}
	if r.TokenFile == "" {
		return errors.New("status.token_file: a file holding the API token is required")
	}
	return nil
}

// Post sets the status of commit sha to state, linking to target.
func (r *Reporter) Post(ctx context.Context, sha, state, target, description string) error {
	tok, err := os.ReadFile(r.TokenFile)
	if err != nil {
		return fmt.Errorf("status token: %w", err)
	}
	token := strings.TrimSpace(string(tok))
	name := r.Context
	if name == "" {
		name = "cleanroom"
	}
	if len(description) > 140 { // GitHub's limit
		description = description[:137] + "..."
	}
	base := strings.TrimRight(r.API, "/")
	var endpoint string
	body := map[string]string{"description": description}
	if target != "" {
		body["target_url"] = target
	}
	hdr := http.Header{}
	switch r.Kind {
	case GitHub:
		endpoint = base + "/repos/" + r.Repository + "/statuses/" + sha
		body["state"], body["context"] = githubState(state), name
		hdr.Set("Authorization", "Bearer "+token)
		hdr.Set("Accept", "application/vnd.github+json")
		hdr.Set("X-GitHub-Api-Version", "2022-11-28")
	case Gitea:
		endpoint = base + "/repos/" + r.Repository + "/statuses/" + sha
		body["state"], body["context"] = githubState(state), name
		hdr.Set("Authorization", "token "+token)
	case GitLab:
		endpoint = base + "/projects/" + url.PathEscape(r.Repository) + "/statuses/" + sha
		body["state"], body["name"] = gitlabState(state), name
		hdr.Set("PRIVATE-TOKEN", token)
	}
	data, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header = hdr
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "cleanroom-agent")
	c := r.Client
	if c == nil {
		c = &http.Client{Timeout: 15 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("post status to %s: %w", r.Kind, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("post status to %s: %s: %s", r.Kind, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

// githubState maps to GitHub's and Gitea's states: pending, success,
// failure, error.
func githubState(s string) string {
	switch s {
	case Pending, Running:
		return "pending"
	case Success:
		return "success"
	case Failure:
		return "failure"
	}
	return "error"
}

// gitlabState maps to GitLab's: pending, running, success, failed,
// canceled.
func gitlabState(s string) string {
	switch s {
	case Pending:
		return "pending"
	case Running:
		return "running"
	case Success:
		return "success"
	case Cancel:
		return "canceled"
	}
	return "failed"
}
