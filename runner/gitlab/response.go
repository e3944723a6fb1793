package gitlab

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"slices"
	"strings"
)

// Response is the subset of the job payload ($JOB_RESPONSE_FILE, GitLab's
// spec.Job) the driver reads. It is the trusted description of the job:
// the CUSTOM_ENV_* copies of the same values follow variable precedence,
// so a job can override them, and the driver never bases a decision on
// them. Unknown fields are ignored: the payload is GitLab's and grows.
type Response struct {
	ID      int64  `json:"id"`
	Token   string `json:"token"`
	JobInfo struct {
		Name        string `json:"name"`
		Stage       string `json:"stage"`
		ProjectID   int64  `json:"project_id"`
		ProjectName string `json:"project_name"`
	} `json:"job_info"`
	GitInfo struct {
		RepoURL string `json:"repo_url"`
		Ref     string `json:"ref"`
		Sha     string `json:"sha"`
		RefType string `json:"ref_type"`
	} `json:"git_info"`
	RunnerInfo struct {
		Timeout int64 `json:"timeout"`
	} `json:"runner_info"`
	Variables   []Variable        `json:"variables"`
	Image       ImageSpec         `json:"image"`
	Services    []json.RawMessage `json:"services"`
	Artifacts   []Artifact        `json:"artifacts"`
	Credentials []Credential      `json:"credentials"`
	Hooks       []Hook            `json:"hooks"`

	// definition holds the raw job-definition fields, hashed for the
	// provenance (see Definition).
	definition map[string]json.RawMessage
}

// Variable is one job variable, as GitLab sends it.
type Variable struct {
	Key    string `json:"key"`
	Value  string `json:"value"`
	Public bool   `json:"public"`
	File   bool   `json:"file"`
	Masked bool   `json:"masked"`
	Raw    bool   `json:"raw"`
}

// ImageSpec is the job's image: keyword.
type ImageSpec struct {
	Name string `json:"name"`
}

// Artifact is one artifacts: entry.
type Artifact struct {
	Name         string   `json:"name"`
	Untracked    bool     `json:"untracked"`
	Paths        []string `json:"paths"`
	Exclude      []string `json:"exclude"`
	When         string   `json:"when"`
	ArtifactType string   `json:"artifact_type"`
}

// Hook is one entry of the job's hooks: keyword
// (pre_get_sources_script, post_get_sources_script), commands the runner
// writes into get_sources.
type Hook struct {
	Name   string   `json:"name"`
	Script []string `json:"script"`
}

// Credential is a registry login GitLab hands the job (for its own
// container registry, with the job token, and any the project adds).
type Credential struct {
	Type     string `json:"type"`
	URL      string `json:"url"`
	Username string `json:"username"`
	Password string `json:"password"`
}

// maxResponseSize bounds the payload read (GitLab's are tens of KiB).
const maxResponseSize = 64 << 20

// ReadResponse reads and checks the job payload.
func ReadResponse(file string) (*Response, error) {
	if file == "" {
		return nil, errors.New("JOB_RESPONSE_FILE is not set: the driver must be called by gitlab-runner's custom executor")
	}
	fi, err := os.Stat(file)
	if err != nil {
		return nil, fmt.Errorf("job response: %w", err)
	}
	if fi.Size() > maxResponseSize {
		return nil, fmt.Errorf("job response %s is larger than %d bytes", file, maxResponseSize)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("job response: %w", err)
	}
	return ParseResponse(data)
}

// ParseResponse decodes a job payload.
func ParseResponse(data []byte) (*Response, error) {
	var r Response
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("job response is not valid JSON: %w", err)
	}
	if r.ID <= 0 {
		return nil, errors.New("job response has no job id")
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(data, &all); err == nil {
		r.definition = map[string]json.RawMessage{}
		for _, k := range definitionKeys {
			if v, ok := all[k]; ok {
				r.definition[k] = v
			}
		}
	}
	return &r, nil
}

// Var returns a job variable's value from the payload. When a key appears
// twice, the last one wins, as in gitlab-runner.
func (r *Response) Var(key string) (string, bool) {
	var v string
	var ok bool
	for _, x := range r.Variables {
		if x.Key == key {
			v, ok = x.Value, true
		}
	}
	return v, ok
}

// Secrets returns the variables named in keys that the job has, by key.
func (r *Response) Secrets(keys []string) []Variable {
	var out []Variable
	for _, x := range r.Variables {
		for _, k := range keys {
			if x.Key == k {
				out = append(out, x)
			}
		}
	}
	return out
}

// MaskedValues returns the values no log may show, by key: the job token,
// every variable GitLab marks masked, and the runner-only secrets named in
// runnerOnly.
func (r *Response) MaskedValues(runnerOnly []string) map[string]string {
	out := map[string]string{}
	if r.Token != "" {
		out["token"] = r.Token
	}
	for i, x := range r.Variables {
		if x.Masked || slices.Contains(runnerOnly, x.Key) {
			out[fmt.Sprintf("variable %d %s", i, x.Key)] = x.Value
		}
	}
	return out
}

// definitionKeys are the payload fields that define what the job does.
var definitionKeys = []string{"image", "services", "steps", "artifacts", "cache", "dependencies"}

// Definition returns the sha256 of the job definition GitLab sent: its
// image, services, script steps, artifacts, cache and dependencies, as
// compact JSON in a fixed key order. GitLab sends the job, not the
// .gitlab-ci.yml it came from, so this digest is what the provenance can
// honestly bind: "this is what the runner was asked to run".
func (r *Response) Definition() string {
	var b bytes.Buffer
	b.WriteByte('{')
	first := true
	for _, k := range definitionKeys {
		v, ok := r.definition[k]
		if !ok {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		kb, _ := json.Marshal(k)
		b.Write(kb)
		b.WriteByte(':')
		var c bytes.Buffer
		if err := json.Compact(&c, v); err != nil {
			b.WriteString("null")
		} else {
			b.Write(c.Bytes())
		}
	}
	b.WriteByte('}')
	sum := sha256.Sum256(b.Bytes())
	return hex.EncodeToString(sum[:])
}

// ProjectSlug is the project's path as gitlab-runner derives it for the
// build directory (<builds_dir>/<slug>): the repository URL's path
// without ".git", or project-<id> when that does not work.
func (r *Response) ProjectSlug() string {
	u, err := url.Parse(r.GitInfo.RepoURL)
	if err == nil && u.Host != "" {
		slug := path.Clean(strings.TrimSuffix(u.Path, ".git"))
		slug = strings.TrimPrefix(slug, "/")
		if slug != "" && slug != "." && !strings.Contains(slug, "..") {
			return slug
		}
	}
	return fmt.Sprintf("project-%d", r.JobInfo.ProjectID)
}

// GitRef is the full ref the job built: refs/tags/<tag> for tags,
// refs/heads/<branch> for branches, empty otherwise (merge requests and
// detached pipelines have no branch ref of their own).
func (r *Response) GitRef() string {
	ref := r.GitInfo.Ref
	if ref == "" || strings.ContainsAny(ref, " @\t\n") {
		return ""
	}
	switch r.GitInfo.RefType {
	case "tag":
		return "refs/tags/" + ref
	case "branch":
		return "refs/heads/" + ref
	}
	return ""
}

// RegistryAuth returns the job's credentials for a registry host, for
// pulling the job image. Only "registry" credentials whose URL names that
// host are used: a job's login is never sent anywhere else.
func (r *Response) RegistryAuth(host string) (user, secret string, ok bool) {
	want := normRegistry(host)
	for _, c := range r.Credentials {
		if c.Type != "registry" || c.Username == "" {
			continue
		}
		if normRegistry(c.URL) == want {
			return c.Username, c.Password, true
		}
	}
	return "", "", false
}

// normRegistry reduces a registry URL or host to host[:port]. Hosts must
// match exactly: a login is never offered to a host that merely looks
// related.
func normRegistry(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+3:]
	}
	s, _, _ = strings.Cut(s, "/")
	return s
}
