package gitlab

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cleanroom-ci/cleanroom/internal/yamlconf"
	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
	"github.com/cleanroom-ci/cleanroom/sign"
)

// Defaults of the admin policy.
const (
	DefaultPolicyPath = "/etc/cleanroom/gitlab.yaml"
	DefaultBuildsDir  = "/var/lib/cleanroom/builds"
	DefaultCacheDir   = "/var/lib/cleanroom/cache"
	// DefaultBuilderID names the GitLab driver as the builder in
	// provenance; an admin running several trust domains sets their own.
	DefaultBuilderID = "https://cleanroom.dev/builder/gitlab@v1"
	// DefaultPids bounds the processes of one stage (fork bombs).
	DefaultPids = 4096
	// DefaultStopGrace is how long a cancelled stage gets between SIGTERM
	// and SIGKILL. gitlab-runner itself waits far longer (10 minutes), so
	// run always exits well within its window.
	DefaultStopGrace = 10 * time.Second
	maxStopGrace     = 5 * time.Minute
	// SigstoreTokenVariable is GitLab's conventional ID token for keyless
	// signing. It is runner-only whatever the policy says: signing is the
	// runner's, and a build that held the token could sign anything as the
	// project.
	SigstoreTokenVariable = "SIGSTORE_ID_TOKEN"
	// EgressRequestVariable is the job variable through which a job asks
	// for more egress than the default, within the policy's maximum.
	EgressRequestVariable = "CLEANROOM_EGRESS_ALLOW"
)

// Policy is the admin's configuration of the driver, resolved and
// validated. It is the trust anchor of every decision the driver makes
// about a job, so every field is checked when it is loaded.
type Policy struct {
	// Path is where the policy was read from (for messages).
	Path string
	// BuildsDir and CacheDir are the roots under which each job gets its
	// own directory.
	BuildsDir, CacheDir string
	// BuilderID is runDetails.builder.id in the provenance.
	BuilderID string
	// AllowedImages are the image patterns a job may run (see
	// ImageAllowed); DefaultImage is used when a job names none.
	AllowedImages []string
	DefaultImage  string
	// AllowedServices are the image patterns a job's services: may run
	// (same syntax); empty refuses every job with services.
	AllowedServices []string
	// HelperImage runs the stages that talk to GitLab; HelperAllow is
	// extra egress for them (a separate clone host, a distributed cache);
	// GitLabRunner is a host binary mounted read-only into helper stages
	// as /usr/local/bin/gitlab-runner (cache and artifact commands).
	HelperImage  string
	HelperAllow  []string
	GitLabRunner string
	// DefaultAllow is the user stages' egress when the job asks for
	// nothing; MaximumAllow bounds what a job may ask for (only when
	// JobMayWiden).
	DefaultAllow []string
	MaximumAllow []string
	JobMayWiden  bool
	// GoProxyUpstream, when set, is the module proxy behind the user
	// stages' GOPROXY endpoint; its host must be in the job's allowlist.
	GoProxyUpstream *url.URL
	// Limits apply to every stage's sandbox.
	MemoryBytes, TmpBytes int64
	CPUs                  float64
	Pids                  int64
	// SigningMode is "none", "key" (the admin's key signs every job's
	// provenance) or "keyless" (the job's SIGSTORE_ID_TOKEN identity, via
	// Fulcio, logged in Rekor).
	SigningMode string
	// Signing holds the key or the Sigstore services for SigningMode.
	Signing SigningConfig
	// RunnerOnly are the variables no sandbox may see, always including
	// SIGSTORE_ID_TOKEN.
	RunnerOnly []string
	// StopGrace is the SIGTERM-to-SIGKILL delay for a cancelled stage.
	StopGrace time.Duration
	// Runtime, when set, is the OCI runtime of every stage (runc, crun,
	// runsc); "" is the runner's default.
	Runtime string
}

// Summary is the resolved policy in the policy file's own terms, for
// `cleanroom gitlab check-policy`.
func (p *Policy) Summary() map[string]any {
	goproxy := ""
	if p.GoProxyUpstream != nil {
		goproxy = p.GoProxyUpstream.String()
	}
	return map[string]any{
		"path":       p.Path,
		"builds_dir": p.BuildsDir,
		"cache_dir":  p.CacheDir,
		"builder_id": p.BuilderID,
		"images":     map[string]any{"allowed": p.AllowedImages, "default": p.DefaultImage},
		"services":   map[string]any{"allowed": p.AllowedServices},
		"helper":     map[string]any{"image": p.HelperImage, "gitlab_runner": p.GitLabRunner, "allow": p.HelperAllow},
		"egress": map[string]any{
			"default": p.DefaultAllow, "maximum": p.MaximumAllow,
			"job_may_widen": p.JobMayWiden, "goproxy_upstream": goproxy,
		},
		"limits":                map[string]any{"memory_bytes": p.MemoryBytes, "tmp_bytes": p.TmpBytes, "cpus": p.CPUs, "pids": p.Pids},
		"signing":               map[string]any{"mode": p.SigningMode},
		"runner_only_variables": p.RunnerOnly,
		"stop_grace":            p.StopGrace.String(),
	}
}

// policyFile is the YAML schema. Unknown keys are errors: a misspelt
// protection (say "maximun") must not silently become no protection.
type policyFile struct {
	Version             int          `yaml:"version"`
	BuildsDir           string       `yaml:"builds_dir"`
	CacheDir            string       `yaml:"cache_dir"`
	BuilderID           string       `yaml:"builder_id"`
	Images              imagesFile   `yaml:"images"`
	Services            servicesFile `yaml:"services"`
	Helper              helperFile   `yaml:"helper"`
	Egress              egressYAML   `yaml:"egress"`
	Limits              limitsFile   `yaml:"limits"`
	Signing             signingFile  `yaml:"signing"`
	RunnerOnlyVariables []string     `yaml:"runner_only_variables"`
	StopGrace           string       `yaml:"stop_grace"`
	Runtime             string       `yaml:"runtime"`
}

type imagesFile struct {
	Allowed []string `yaml:"allowed"`
	Default string   `yaml:"default"`
}

type servicesFile struct {
	Allowed []string `yaml:"allowed"`
}

type helperFile struct {
	Image        string   `yaml:"image"`
	GitLabRunner string   `yaml:"gitlab_runner"`
	Allow        []string `yaml:"allow"`
}

type egressYAML struct {
	Default         []string `yaml:"default"`
	Maximum         []string `yaml:"maximum"`
	JobMayWiden     bool     `yaml:"job_may_widen"`
	GoProxyUpstream string   `yaml:"goproxy_upstream"`
}

type limitsFile struct {
	Memory string  `yaml:"memory"`
	Tmp    string  `yaml:"tmp"`
	CPUs   float64 `yaml:"cpus"`
	Pids   *int64  `yaml:"pids"`
}

type signingFile struct {
	Mode         string `yaml:"mode"`
	Key          string `yaml:"key"`
	PasswordFile string `yaml:"password_file"`
	FulcioURL    string `yaml:"fulcio_url"`
	RekorURL     string `yaml:"rekor_url"`
	TSAURL       string `yaml:"tsa_url"`
	TrustedRoot  string `yaml:"trusted_root"`
}

// SigningConfig is the policy's signing section, resolved: Key and
// PasswordFile are absolute paths (mode "key"; the key never enters a
// stage), the Sigstore services are empty for the public instance, and
// TrustedRoot makes every bundle verify before it is written. Mode is
// filled from SigningMode when signing; the keyless token is the job's.
type SigningConfig = sign.Config

// maxPolicySize bounds what is read: a policy is a page of YAML.
const maxPolicySize = 1 << 20

// LoadPolicy reads and validates the policy file. When running as root
// it also refuses a file that someone other than root could have written:
// the policy decides what jobs may do on this host, so it must be as
// protected as the runner itself.
func LoadPolicy(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("gitlab policy %s does not exist: create it (see examples/gitlab/policy.yaml) or point --policy / CLEANROOM_GITLAB_POLICY at one", path)
		}
		return nil, fmt.Errorf("gitlab policy: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("gitlab policy: %w", err)
	}
	if err := checkPolicyOwner(path, fi); err != nil {
		return nil, err
	}
	if fi.Size() > maxPolicySize {
		return nil, fmt.Errorf("gitlab policy %s is larger than %d bytes", path, maxPolicySize)
	}
	data := make([]byte, fi.Size())
	if _, err := f.ReadAt(data, 0); err != nil && fi.Size() > 0 {
		return nil, fmt.Errorf("gitlab policy: %w", err)
	}
	return ParsePolicy(path, data)
}

func checkPolicyOwner(path string, fi os.FileInfo) error {
	if os.Geteuid() != 0 {
		return nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if st.Uid != 0 || fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("gitlab policy %s must be owned by root and writable by root only (it is uid %d, mode %v): whoever can write it controls what jobs may do on this host", path, st.Uid, fi.Mode().Perm())
	}
	return nil
}

// ParsePolicy decodes and validates policy YAML; name is used in errors.
func ParsePolicy(name string, data []byte) (*Policy, error) {
	d := &policyDecoder{Decoder: yamlconf.Decoder{File: name}}
	var raw policyFile
	n, err := d.Decode(data, &raw)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, &PolicyError{File: name, Line: 1, Column: 1, Msg: "the policy is empty; it needs at least version: 1, images.allowed and helper.image"}
	}
	p := d.resolve(&raw)
	if err := d.Err(); err != nil {
		return nil, err
	}
	p.Path = name
	return p, nil
}

// PolicyError is one problem in the policy file, at FILE:LINE:COL.
type PolicyError = yamlconf.Error

type policyDecoder struct {
	yamlconf.Decoder
}

var varNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func (d *policyDecoder) resolve(raw *policyFile) *Policy {
	p := &Policy{
		BuildsDir:    orDefault(raw.BuildsDir, DefaultBuildsDir),
		CacheDir:     orDefault(raw.CacheDir, DefaultCacheDir),
		BuilderID:    orDefault(raw.BuilderID, DefaultBuilderID),
		DefaultImage: raw.Images.Default,
		HelperImage:  raw.Helper.Image,
		GitLabRunner: raw.Helper.GitLabRunner,
		JobMayWiden:  raw.Egress.JobMayWiden,
		CPUs:         raw.Limits.CPUs,
		Pids:         DefaultPids,
		SigningMode:  orDefault(raw.Signing.Mode, sign.ModeNone),
		Signing: SigningConfig{
			Key: raw.Signing.Key, PasswordFile: raw.Signing.PasswordFile,
			FulcioURL: raw.Signing.FulcioURL, RekorURL: raw.Signing.RekorURL, TSAURL: raw.Signing.TSAURL,
			TrustedRoot: raw.Signing.TrustedRoot,
		},
		StopGrace: DefaultStopGrace,
	}
	if raw.Version != 1 {
		d.Errorf("$.version", "version", "must be 1 (got %d)", raw.Version)
	}
	for _, f := range []struct{ path, field, v string }{
		{"$.builds_dir", "builds_dir", p.BuildsDir},
		{"$.cache_dir", "cache_dir", p.CacheDir},
	} {
		if !filepath.IsAbs(f.v) || filepath.Clean(f.v) != f.v || f.v == "/" {
			d.Errorf(f.path, f.field, "%q must be an absolute, clean path other than /", f.v)
		}
	}
	if sameOrNested(p.BuildsDir, p.CacheDir) {
		d.Errorf("$.cache_dir", "cache_dir", "must not be inside builds_dir or contain it: jobs' builds directories are removed after each job, the cache is kept")
	}
	if u, err := url.Parse(p.BuilderID); err != nil || u.Scheme == "" || u.Host == "" || strings.ContainsAny(p.BuilderID, " \t\n") {
		d.Errorf("$.builder_id", "builder_id", "%q is not an absolute URI", p.BuilderID)
	}

	// Images.
	if len(raw.Images.Allowed) == 0 {
		d.Errorf("$.images", "images.allowed", "is empty: no job could run; list the image patterns jobs may use, e.g. [\"registry.example.org/team/*:*\"]")
	}
	for i, pat := range raw.Images.Allowed {
		if err := checkImagePattern(pat); err != nil {
			d.Errorf(fmt.Sprintf("$.images.allowed[%d]", i), fmt.Sprintf("images.allowed[%d]", i), "%v", err)
		}
	}
	p.AllowedImages = raw.Images.Allowed
	for i, pat := range raw.Services.Allowed {
		if err := checkImagePattern(pat); err != nil {
			d.Errorf(fmt.Sprintf("$.services.allowed[%d]", i), fmt.Sprintf("services.allowed[%d]", i), "%v", err)
		}
	}
	p.AllowedServices = raw.Services.Allowed
	if p.DefaultImage != "" {
		if _, err := ImageAllowed(p.AllowedImages, p.DefaultImage); err != nil {
			d.Errorf("$.images.default", "images.default", "%v", err)
		}
	}

	// Helper.
	if p.HelperImage == "" {
		d.Errorf("$.helper", "helper.image", "is required: the stages that talk to GitLab (sources, cache, artifacts) run in it; it needs bash, git and, for cache and artifacts, gitlab-runner (or set helper.gitlab_runner)")
	} else if _, err := parseImage(p.HelperImage); err != nil {
		d.Errorf("$.helper.image", "helper.image", "%v", err)
	}
	if p.GitLabRunner != "" && (!filepath.IsAbs(p.GitLabRunner) || filepath.Clean(p.GitLabRunner) != p.GitLabRunner) {
		d.Errorf("$.helper.gitlab_runner", "helper.gitlab_runner", "%q must be an absolute, clean path to the gitlab-runner binary on this host", p.GitLabRunner)
	}
	p.HelperAllow = d.rules("$.helper.allow", "helper.allow", raw.Helper.Allow)

	// Egress.
	p.DefaultAllow = d.rules("$.egress.default", "egress.default", raw.Egress.Default)
	p.MaximumAllow = d.rules("$.egress.maximum", "egress.maximum", raw.Egress.Maximum)
	if p.JobMayWiden && len(p.MaximumAllow) == 0 {
		d.Errorf("$.egress.job_may_widen", "egress.job_may_widen", "is true but egress.maximum is empty, so a job could widen to nothing; list what jobs may ask for")
	}
	if raw.Egress.GoProxyUpstream != "" {
		u, err := url.Parse(raw.Egress.GoProxyUpstream)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			d.Errorf("$.egress.goproxy_upstream", "egress.goproxy_upstream", "%q must be an http(s) URL without credentials", raw.Egress.GoProxyUpstream)
		} else {
			p.GoProxyUpstream = u
		}
	}

	// Limits.
	if raw.Limits.Memory != "" {
		n, err := pipeline.ParseSize(raw.Limits.Memory)
		if err != nil {
			d.Errorf("$.limits.memory", "limits.memory", "%v", err)
		}
		p.MemoryBytes = n
	}
	if raw.Limits.Tmp != "" {
		n, err := pipeline.ParseSize(raw.Limits.Tmp)
		if err != nil {
			d.Errorf("$.limits.tmp", "limits.tmp", "%v", err)
		}
		p.TmpBytes = n
	}
	if p.CPUs < 0 || p.CPUs > 1024 {
		d.Errorf("$.limits.cpus", "limits.cpus", "%v is out of range (0 means no limit)", p.CPUs)
	}
	if raw.Limits.Pids != nil {
		p.Pids = *raw.Limits.Pids
		if p.Pids < 0 {
			d.Errorf("$.limits.pids", "limits.pids", "%d is negative (0 means no limit)", p.Pids)
		}
	}

	// Signing.
	switch p.SigningMode {
	case sign.ModeNone, sign.ModeKeyless:
	case sign.ModeKey:
		if !filepath.IsAbs(p.Signing.Key) {
			d.Errorf("$.signing.key", "signing.key", "mode %q needs the absolute path of the signing key (cosign.key)", sign.ModeKey)
		}
	default:
		d.Errorf("$.signing.mode", "signing.mode", "%q: use %q, %q or %q", p.SigningMode, sign.ModeNone, sign.ModeKey, sign.ModeKeyless)
	}
	for _, f := range []struct{ path, field, v string }{
		{"$.signing.password_file", "signing.password_file", p.Signing.PasswordFile},
		{"$.signing.trusted_root", "signing.trusted_root", p.Signing.TrustedRoot},
	} {
		if f.v != "" && !filepath.IsAbs(f.v) {
			d.Errorf(f.path, f.field, "must be an absolute path")
		}
	}

	// Runner-only variables.
	p.RunnerOnly = []string{SigstoreTokenVariable}
	for i, name := range raw.RunnerOnlyVariables {
		if !varNameRE.MatchString(name) {
			d.Errorf(fmt.Sprintf("$.runner_only_variables[%d]", i), fmt.Sprintf("runner_only_variables[%d]", i), "%q is not a variable name", name)
			continue
		}
		if !slices.Contains(p.RunnerOnly, name) {
			p.RunnerOnly = append(p.RunnerOnly, name)
		}
	}

	if raw.StopGrace != "" {
		g, err := time.ParseDuration(raw.StopGrace)
		if err != nil || g < 0 || g > maxStopGrace {
			d.Errorf("$.stop_grace", "stop_grace", "%q must be a duration between 0s and %s, e.g. 10s", raw.StopGrace, maxStopGrace)
		} else {
			p.StopGrace = g
		}
	}
	if raw.Runtime != "" && !slices.Contains(pipeline.Runtimes, raw.Runtime) {
		d.Errorf("$.runtime", "runtime", "%q: want one of %s", raw.Runtime, strings.Join(pipeline.Runtimes, ", "))
	}
	p.Runtime = raw.Runtime
	return p
}

// rules validates an allowlist with the proxy's own grammar and returns
// the canonical forms.
func (d *policyDecoder) rules(path, field string, in []string) []string {
	out := []string{}
	for i, s := range in {
		r, err := egress.ParseRule(s)
		if err != nil {
			d.Errorf(fmt.Sprintf("%s[%d]", path, i), fmt.Sprintf("%s[%d]", field, i), "%v", err)
			continue
		}
		if !slices.Contains(out, r.String()) {
			out = append(out, r.String())
		}
	}
	return out
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func sameOrNested(a, b string) bool {
	return a == b || strings.HasPrefix(a, b+"/") || strings.HasPrefix(b, a+"/")
}
