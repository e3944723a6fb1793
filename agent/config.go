package agent

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/cleanroom-ci/cleanroom/agent/forge"
	"github.com/cleanroom-ci/cleanroom/internal/glob"
	"github.com/cleanroom-ci/cleanroom/internal/imagepattern"
	"github.com/cleanroom-ci/cleanroom/internal/yamlconf"
	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
	"github.com/cleanroom-ci/cleanroom/sign"
)

// Defaults of the agent configuration.
const (
	DefaultConfigPath = "/etc/cleanroom/agent.yaml"
	DefaultDataDir    = "/var/lib/cleanroom/agent"
	DefaultListen     = "127.0.0.1:8080"
	DefaultBuilderID  = "https://cleanroom.dev/builder/agent@v1"
	// DefaultMaxUpload bounds an uploaded source tarball (compressed).
	DefaultMaxUpload = 256 << 20
	// DefaultRetention is how long a finished job's state, log and
	// outputs are kept.
	DefaultRetention = 30 * 24 * time.Hour
	// maxWebhookBody bounds a webhook delivery; GitHub caps its payloads
	// at 25 MB.
	maxWebhookBody = 25 << 20
)

// Policies for a job whose agent was lost (killed, crashed, restarted)
// while it ran.
const (
	OnLossRetry = "retry"
	OnLossFail  = "fail"
)

// Config is the agent's configuration, resolved and validated.
type Config struct {
	Path string
	// URL is the agent's address as its users reach it (behind a load
	// balancer, say): commit statuses link to URL/jobs/<id>.
	URL string
	// Listen is the HTTP(S) address; TLSCert and TLSKey turn on TLS.
	Listen            string
	TLSCert, TLSKey   string
	DataDir           string
	Concurrency       int
	NATSURL           string
	NATSCredentials   string
	NATSReplicas      int
	TokensFile        string
	SourceAllow       []string
	SourceAllowHTTP   bool
	SourceCredentials []GitCredential
	SourceCA          string
	MaxUpload         int64
	ImagesAllowed     []string
	JobTimeout        time.Duration
	OnAgentLoss       string
	MaxAttempts       int
	// RepositoryConcurrency bounds the jobs of one repository running
	// at once across the agents; 0 means no bound.
	RepositoryConcurrency int
	Grace                 time.Duration
	Retention             time.Duration
	AckWait               time.Duration
	RunAllow              []string
	// EgressMaximum caps the egress rules a pipeline may write; when
	// EgressCapped is false the built-in default applies (see checkEgress).
	EgressMaximum   []string
	EgressCapped    bool
	Untrusted       Untrusted
	GoProxyUpstream string
	BuilderID       string
	// Runtime, when set, is the OCI runtime of every job's steps (runc,
	// crun, runsc), whatever a pushed pipeline asks for.
	Runtime  string
	Signing  Signing
	Webhooks []Webhook
	Secrets  []Secret
}

// Untrusted is how the agent runs builds of code from outside the
// repository (pull requests from forks): never signed, no secrets, and
// egress within their own, stricter, cap.
type Untrusted struct {
	// EgressMaximum caps their pipelines' egress rules (default: none).
	EgressMaximum []string
	// Allow replaces run.allow for them (default: nothing).
	Allow []string
	// BuilderID is their provenance's builder.id, so a verifier tells
	// them from trusted builds.
	BuilderID string
}

// DefaultUntrustedBuilderID names untrusted builds in their provenance.
const DefaultUntrustedBuilderID = "https://cleanroom.dev/builder/agent-untrusted@v1"

// Signing is how the agent signs the jobs' provenance and artifacts: the
// one signing configuration (sign.Config), which the agent hands to each
// job's child run as flags. Key mode: a cosign key and the file holding
// its password. Keyless mode: IdentityTokenFile, a file the platform keeps
// fresh with an OIDC token (a projected service-account token, a workload
// identity file).
type Signing = sign.Config

// GitCredential is an HTTP header the agent sends to one git host, for
// private repositories; the header is read from a file at each fetch, so
// it can be rotated without a restart, and never reaches a job.
type GitCredential struct {
	Host       string // host or host:port of the remotes it applies to
	HeaderFile string // one line, e.g. "Authorization: Basic <base64>"
}

// Webhook maps a push webhook to a repository and pipeline.
type Webhook struct {
	Name       string
	Provider   string
	SecretFile string
	Repository string
	Refs       []string
	Pipeline   string
	// PullRequests builds pull and merge requests targeting Refs;
	// those from forks run untrusted (see Untrusted).
	PullRequests bool
	// CancelSuperseded: a new push to a branch (or pull request) cancels
	// the earlier unfinished jobs of the same hook and ref.
	CancelSuperseded bool
	// Status, if set, reports the hook's jobs back to the forge as commit
	// statuses.
	Status *forge.Reporter
}

type configFile struct {
	Version     int           `yaml:"version"`
	Listen      string        `yaml:"listen"`
	URL         string        `yaml:"url"`
	TLS         tlsFile       `yaml:"tls"`
	DataDir     string        `yaml:"data_dir"`
	Concurrency int           `yaml:"concurrency"`
	NATS        natsFile      `yaml:"nats"`
	TokensFile  string        `yaml:"tokens_file"`
	Source      sourceFile    `yaml:"source"`
	Images      imagesFile    `yaml:"images"`
	Jobs        jobsFile      `yaml:"jobs"`
	Run         runFile       `yaml:"run"`
	Egress      egressFile    `yaml:"egress"`
	Untrusted   untrustedFile `yaml:"untrusted"`
	Signing     signingFile   `yaml:"signing"`
	Webhooks    []hookFile    `yaml:"webhooks"`
	Secrets     []secretFile  `yaml:"secrets"`
}

type secretFile struct {
	Name         string   `yaml:"name"`
	File         string   `yaml:"file"`
	Dir          string   `yaml:"dir"`
	Repositories []string `yaml:"repositories"`
	Refs         []string `yaml:"refs"`
}

type tlsFile struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

type natsFile struct {
	URL         string `yaml:"url"`
	Credentials string `yaml:"credentials"`
	Replicas    int    `yaml:"replicas"`
	AckWait     string `yaml:"ack_wait"`
}

type sourceFile struct {
	Allow       []string   `yaml:"allow"`
	AllowHTTP   bool       `yaml:"allow_http"`
	Credentials []credFile `yaml:"credentials"`
	CA          string     `yaml:"ca"`
	MaxUpload   string     `yaml:"max_upload"`
}

type credFile struct {
	Host       string `yaml:"host"`
	HeaderFile string `yaml:"header_file"`
}

type imagesFile struct {
	Allowed []string `yaml:"allowed"`
}

type jobsFile struct {
	Timeout               string `yaml:"timeout"`
	OnAgentLoss           string `yaml:"on_agent_loss"`
	MaxAttempts           int    `yaml:"max_attempts"`
	Grace                 string `yaml:"grace"`
	Retention             string `yaml:"retention"`
	RepositoryConcurrency int    `yaml:"repository_concurrency"`
}

type runFile struct {
	Allow           []string `yaml:"allow"`
	GoProxyUpstream string   `yaml:"goproxy_upstream"`
	BuilderID       string   `yaml:"builder_id"`
	Runtime         string   `yaml:"runtime"`
}

type egressFile struct {
	// Maximum is a pointer so that "maximum: []" (pipelines get no
	// egress of their own) differs from no setting (the default cap).
	Maximum *[]string `yaml:"maximum"`
}

type signingFile struct {
	Mode              string `yaml:"mode"`
	Key               string `yaml:"key"`
	PasswordFile      string `yaml:"password_file"`
	IdentityTokenFile string `yaml:"identity_token_file"`
	FulcioURL         string `yaml:"fulcio_url"`
	RekorURL          string `yaml:"rekor_url"`
	TSAURL            string `yaml:"tsa_url"`
	TrustedRoot       string `yaml:"trusted_root"`
}

type hookFile struct {
	Name             string      `yaml:"name"`
	Provider         string      `yaml:"provider"`
	SecretFile       string      `yaml:"secret_file"`
	Repository       string      `yaml:"repository"`
	Refs             []string    `yaml:"refs"`
	Pipeline         string      `yaml:"pipeline"`
	PullRequests     bool        `yaml:"pull_requests"`
	CancelSuperseded bool        `yaml:"cancel_superseded"`
	Status           *statusFile `yaml:"status"`
}

type untrustedFile struct {
	EgressMaximum *[]string `yaml:"egress_maximum"`
	Allow         []string  `yaml:"allow"`
	BuilderID     string    `yaml:"builder_id"`
}

type statusFile struct {
	Kind       string `yaml:"kind"`
	API        string `yaml:"api"`
	Repository string `yaml:"repository"`
	TokenFile  string `yaml:"token_file"`
	Context    string `yaml:"context"`
}

// ConfigError is one problem in the configuration, at FILE:LINE:COL.
type ConfigError = yamlconf.Error

// LoadConfig reads and validates the agent configuration. A missing file
// is not an error when path is the default: every setting has a default
// that is safe (loopback only, no webhooks, nothing signed).
func LoadConfig(path string, mustExist bool) (*Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !mustExist {
		data = []byte("version: 1\n")
	} else if err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig decodes and validates configuration YAML.
func ParseConfig(name string, data []byte) (*Config, error) {
	d := &configDecoder{Decoder: yamlconf.Decoder{File: name}}
	var raw configFile
	if _, err := d.Decode(data, &raw); err != nil {
		return nil, err
	}
	c := d.resolve(&raw)
	if err := d.Err(); err != nil {
		return nil, err
	}
	c.Path = name
	return c, nil
}

type configDecoder struct {
	yamlconf.Decoder
}

func (d *configDecoder) duration(path, field, raw string, def time.Duration) time.Duration {
	if raw == "" {
		return def
	}
	v, err := time.ParseDuration(raw)
	if err != nil || v <= 0 {
		d.Errorf(path, field, "%q is not a positive duration (e.g. 30s, 10m, 1h)", raw)
		return def
	}
	return v
}

func (d *configDecoder) rules(path, field string, in []string) []string {
	for i, r := range in {
		if _, err := egress.ParseRule(r); err != nil {
			d.Errorf(fmt.Sprintf("%s[%d]", path, i), field, "%v", err)
		}
	}
	return in
}

func (d *configDecoder) resolve(raw *configFile) *Config {
	if raw.Version != 0 && raw.Version != 1 {
		d.Errorf("$.version", "version", "unsupported version %d; this agent reads version 1", raw.Version)
	}
	c := &Config{
		Listen:          orDefault(raw.Listen, DefaultListen),
		URL:             strings.TrimRight(raw.URL, "/"),
		TLSCert:         raw.TLS.Cert,
		TLSKey:          raw.TLS.Key,
		DataDir:         orDefault(raw.DataDir, DefaultDataDir),
		Concurrency:     raw.Concurrency,
		NATSURL:         raw.NATS.URL,
		NATSCredentials: raw.NATS.Credentials,
		NATSReplicas:    max(raw.NATS.Replicas, 1),
		TokensFile:      raw.TokensFile,
		SourceAllowHTTP: raw.Source.AllowHTTP,
		MaxUpload:       DefaultMaxUpload,
		ImagesAllowed:   raw.Images.Allowed,
		OnAgentLoss:     orDefault(raw.Jobs.OnAgentLoss, OnLossRetry),
		MaxAttempts:     raw.Jobs.MaxAttempts,
		GoProxyUpstream: raw.Run.GoProxyUpstream,
		BuilderID:       orDefault(raw.Run.BuilderID, DefaultBuilderID),
		Runtime:         raw.Run.Runtime,
	}
	if c.Runtime != "" && !slices.Contains(pipeline.Runtimes, c.Runtime) {
		d.Errorf("$.run.runtime", "run.runtime", "%q: want one of %s", c.Runtime, strings.Join(pipeline.Runtimes, ", "))
	}
	if c.Concurrency == 0 {
		c.Concurrency = runtime.NumCPU()
	}
	if c.Concurrency < 0 {
		d.Errorf("$.concurrency", "concurrency", "must be positive")
		c.Concurrency = 1
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 2
	}
	c.RepositoryConcurrency = raw.Jobs.RepositoryConcurrency
	if c.RepositoryConcurrency < 0 {
		d.Errorf("$.jobs.repository_concurrency", "jobs.repository_concurrency", "must be 0 (no bound) or positive")
	}
	if c.MaxAttempts < 0 {
		d.Errorf("$.jobs.max_attempts", "jobs.max_attempts", "must be positive")
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		d.Errorf("$.listen", "listen", "%q is not HOST:PORT", c.Listen)
	}
	if c.URL != "" {
		if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
			d.Errorf("$.url", "url", "%q: the agent's http(s) address as its users reach it, e.g. https://ci.example.org", c.URL)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		d.Errorf("$.tls", "tls", "set both cert and key, or neither")
	}
	if !filepath.IsAbs(c.DataDir) {
		d.Errorf("$.data_dir", "data_dir", "must be an absolute path")
	}
	if raw.NATS.Replicas < 0 || raw.NATS.Replicas > 5 {
		d.Errorf("$.nats.replicas", "nats.replicas", "must be 1 to 5")
	}
	c.AckWait = d.duration("$.nats.ack_wait", "nats.ack_wait", raw.NATS.AckWait, 30*time.Second)
	c.SourceAllow = d.rules("$.source.allow", "source.allow", raw.Source.Allow)
	c.SourceCA = raw.Source.CA
	for i, cr := range raw.Source.Credentials {
		at := fmt.Sprintf("$.source.credentials[%d]", i)
		if cr.Host == "" || strings.ContainsAny(cr.Host, "/@ ") {
			d.Errorf(at, "source.credentials.host", "%q: a host or host:port, e.g. git.example.org", cr.Host)
		}
		if !filepath.IsAbs(cr.HeaderFile) {
			d.Errorf(at, "source.credentials.header_file", "%q: the absolute path of a file holding one header line", cr.HeaderFile)
		}
		c.SourceCredentials = append(c.SourceCredentials, GitCredential{Host: strings.ToLower(cr.Host), HeaderFile: cr.HeaderFile})
	}
	if raw.Source.MaxUpload != "" {
		n, err := pipeline.ParseSize(raw.Source.MaxUpload)
		if err != nil || n <= 0 {
			d.Errorf("$.source.max_upload", "source.max_upload", "%q is not a size (e.g. 256MiB)", raw.Source.MaxUpload)
		} else {
			c.MaxUpload = n
		}
	}
	for i, p := range c.ImagesAllowed {
		if err := imagepattern.Check(p); err != nil {
			d.Errorf(fmt.Sprintf("$.images.allowed[%d]", i), "images.allowed", "%v", err)
		}
	}
	c.JobTimeout = d.duration("$.jobs.timeout", "jobs.timeout", raw.Jobs.Timeout, time.Hour)
	c.Grace = d.duration("$.jobs.grace", "jobs.grace", raw.Jobs.Grace, 2*time.Minute)
	c.Retention = d.duration("$.jobs.retention", "jobs.retention", raw.Jobs.Retention, DefaultRetention)
	if c.OnAgentLoss != OnLossRetry && c.OnAgentLoss != OnLossFail {
		d.Errorf("$.jobs.on_agent_loss", "jobs.on_agent_loss", "%q: use retry (run the job again, up to max_attempts) or fail", c.OnAgentLoss)
	}
	c.RunAllow = d.rules("$.run.allow", "run.allow", raw.Run.Allow)
	c.Untrusted = Untrusted{EgressMaximum: []string{}, BuilderID: orDefault(raw.Untrusted.BuilderID, DefaultUntrustedBuilderID)}
	if raw.Untrusted.EgressMaximum != nil {
		c.Untrusted.EgressMaximum = d.rules("$.untrusted.egress_maximum", "untrusted.egress_maximum", *raw.Untrusted.EgressMaximum)
	}
	c.Untrusted.Allow = d.rules("$.untrusted.allow", "untrusted.allow", raw.Untrusted.Allow)
	if c.Untrusted.BuilderID == c.BuilderID {
		d.Errorf("$.untrusted.builder_id", "untrusted.builder_id", "must differ from run.builder_id: it is how provenance tells untrusted builds from trusted ones")
	}
	if raw.Egress.Maximum != nil {
		c.EgressCapped = true
		c.EgressMaximum = d.rules("$.egress.maximum", "egress.maximum", *raw.Egress.Maximum)
	}
	c.Signing = d.signing(raw.Signing)
	c.Webhooks = d.webhooks(raw.Webhooks, c.SourceAllowHTTP)
	c.Secrets = d.secrets(raw.Secrets)
	return c
}

func (d *configDecoder) signing(s signingFile) Signing {
	out := Signing{Mode: orDefault(s.Mode, sign.ModeNone), Key: s.Key, PasswordFile: s.PasswordFile,
		IdentityTokenFile: s.IdentityTokenFile, FulcioURL: s.FulcioURL, RekorURL: s.RekorURL, TSAURL: s.TSAURL, TrustedRoot: s.TrustedRoot}
	switch out.Mode {
	case sign.ModeNone:
	case sign.ModeKey:
		if s.Key == "" {
			d.Errorf("$.signing", "signing.key", "mode key needs key: the cosign key file")
		}
	case sign.ModeKeyless:
		if s.IdentityTokenFile == "" {
			d.Errorf("$.signing", "signing.identity_token_file", "mode keyless needs identity_token_file: a file holding the agent's OIDC token")
		}
	default:
		d.Errorf("$.signing.mode", "signing.mode", "%q: use none, key or keyless", out.Mode)
	}
	return out
}

func (d *configDecoder) webhooks(in []hookFile, allowHTTP bool) []Webhook {
	var out []Webhook
	names := map[string]bool{}
	for i, h := range in {
		at := fmt.Sprintf("$.webhooks[%d]", i)
		w := Webhook{Name: h.Name, Provider: h.Provider, SecretFile: h.SecretFile, Repository: h.Repository, Refs: h.Refs, Pipeline: orDefault(h.Pipeline, "cleanroom.yaml"), PullRequests: h.PullRequests, CancelSuperseded: h.CancelSuperseded}
		if !hookNameRE(w.Name) {
			d.Errorf(at+".name", "webhooks.name", "%q: use letters, digits, '-' and '_' (it is the URL path /hooks/<name>)", w.Name)
		} else if names[w.Name] {
			d.Errorf(at+".name", "webhooks.name", "%q is used twice", w.Name)
		}
		names[w.Name] = true
		if w.Provider != "github" && w.Provider != "gitlab" {
			d.Errorf(at, "webhooks.provider", "%q: use github or gitlab", w.Provider)
		}
		if w.SecretFile == "" {
			d.Errorf(at, "webhooks.secret_file", "a webhook needs a secret: a file holding the shared secret (GitHub) or token (GitLab)")
		}
		if !strings.HasPrefix(w.Repository, "https://") && !(allowHTTP && strings.HasPrefix(w.Repository, "http://")) {
			d.Errorf(at, "webhooks.repository", "%q: the https clone URL of the repository", w.Repository)
		}
		if st := h.Status; st != nil {
			w.Status = &forge.Reporter{Kind: orDefault(st.Kind, w.Provider), API: st.API, Repository: st.Repository, TokenFile: st.TokenFile, Context: st.Context}
			if err := w.Status.Check(); err != nil {
				d.Errorf(at+".status", "webhooks.status", "%v", err)
			} else if strings.HasPrefix(st.API, "http://") && !allowHTTP {
				d.Errorf(at+".status.api", "webhooks.status.api", "%q: use https (http only with source.allow_http)", st.API)
			}
			if !filepath.IsAbs(st.TokenFile) {
				d.Errorf(at+".status.token_file", "webhooks.status.token_file", "%q: the absolute path of the file holding the API token", st.TokenFile)
			}
		}
		out = append(out, w)
	}
	return out
}

func (d *configDecoder) secrets(in []secretFile) []Secret {
	var out []Secret
	for i, sf := range in {
		at := fmt.Sprintf("$.secrets[%d]", i)
		s := Secret{Name: sf.Name, File: sf.File, Dir: sf.Dir, Repositories: sf.Repositories, Refs: sf.Refs}
		switch {
		case (s.File == "") == (s.Dir == ""):
			d.Errorf(at, "secrets", "give file (one secret, with name) or dir (a secret per file, named after it)")
		case s.File != "" && !secretNameOK(s.Name):
			d.Errorf(at+".name", "secrets.name", "%q: an environment variable name (not PATH, HOME or one the runner sets)", s.Name)
		case s.Dir != "" && s.Name != "":
			d.Errorf(at+".name", "secrets.name", "a dir of secrets names each after its file; drop name")
		}
		for _, p := range []string{s.File, s.Dir} {
			if p != "" && !filepath.IsAbs(p) {
				d.Errorf(at, "secrets", "%q must be an absolute path", p)
			}
		}
		if len(s.Repositories) == 0 {
			d.Errorf(at, "secrets.repositories", "name the repositories (clone URLs, globs allowed) whose jobs get it")
		}
		for _, p := range append(append([]string{}, s.Repositories...), s.Refs...) {
			if _, err := glob.Compile(p); err != nil {
				d.Errorf(at, "secrets", "%v", err)
			}
		}
		out = append(out, s)
	}
	return out
}

func hookNameRE(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
