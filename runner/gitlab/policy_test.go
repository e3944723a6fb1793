package gitlab

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/distribution/reference"

	"github.com/cleanroom-ci/cleanroom/sign"
)

const fullPolicy = `version: 1
builds_dir: /srv/builds
cache_dir: /srv/cache
builder_id: https://ci.example.org/runners/hermetic
images:
  allowed:
    - golang:*
    - registry.example.org/team/**
    - "!registry.example.org/team/untrusted/**"
  default: golang:1.26
helper:
  image: registry.example.org/ci/helper@sha256:0000000000000000000000000000000000000000000000000000000000000000
  gitlab_runner: /usr/bin/gitlab-runner
  allow: [cache.example.org]
egress:
  default: [modules.example.org, "sums.example.org"]
  maximum: ["*.example.org", "10.0.0.0/8:8080"]
  job_may_widen: true
  goproxy_upstream: https://modules.example.org
limits:
  memory: 2GiB
  tmp: 512MiB
  cpus: 1.5
  pids: 1024
signing:
  mode: none
runner_only_variables: [VAULT_ID_TOKEN, SIGSTORE_ID_TOKEN]
stop_grace: 20s
`

func TestParsePolicyFull(t *testing.T) {
	p, err := ParsePolicy("gitlab.yaml", []byte(fullPolicy))
	if err != nil {
		t.Fatal(err)
	}
	if p.BuildsDir != "/srv/builds" || p.CacheDir != "/srv/cache" || p.BuilderID != "https://ci.example.org/runners/hermetic" {
		t.Errorf("dirs/builder: %+v", p)
	}
	if p.DefaultImage != "golang:1.26" || len(p.AllowedImages) != 3 {
		t.Errorf("images: %+v", p)
	}
	if p.MemoryBytes != 2<<30 || p.TmpBytes != 512<<20 || p.CPUs != 1.5 || p.Pids != 1024 {
		t.Errorf("limits: %+v", p)
	}
	if !p.JobMayWiden || !slices.Equal(p.MaximumAllow, []string{"*.example.org", "10.0.0.0/8:8080"}) {
		t.Errorf("egress: %+v", p)
	}
	if p.GoProxyUpstream == nil || p.GoProxyUpstream.Host != "modules.example.org" {
		t.Errorf("goproxy: %v", p.GoProxyUpstream)
	}
	if !slices.Equal(p.RunnerOnly, []string{SigstoreTokenVariable, "VAULT_ID_TOKEN"}) {
		t.Errorf("runner-only: %v", p.RunnerOnly)
	}
	if p.StopGrace != 20*time.Second || p.SigningMode != sign.ModeNone {
		t.Errorf("grace/signing: %v %v", p.StopGrace, p.SigningMode)
	}
}

func TestParsePolicyDefaults(t *testing.T) {
	p, err := ParsePolicy("p.yaml", []byte("version: 1\nimages: {allowed: [\"alpine:*\"]}\nhelper: {image: \"oci-archive:/srv/helper.tar\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.BuildsDir != DefaultBuildsDir || p.CacheDir != DefaultCacheDir || p.BuilderID != DefaultBuilderID ||
		p.Pids != DefaultPids || p.StopGrace != DefaultStopGrace || p.SigningMode != sign.ModeNone ||
		len(p.DefaultAllow) != 0 || p.JobMayWiden || !slices.Equal(p.RunnerOnly, []string{SigstoreTokenVariable}) {
		t.Errorf("defaults: %+v", p)
	}
}

// Unknown keys are errors with file:line:col, at any depth: a misspelt
// protection must not silently vanish.
func TestParsePolicyUnknownKeys(t *testing.T) {
	for _, tc := range []struct {
		yaml, want string
	}{
		{"version: 1\nimagez: {}\n", "p.yaml:2:1:"},
		{"version: 1\nimages:\n  allowed: [a]\negress:\n  maximun: [x.example.org]\n", "p.yaml:5:3:"},
		{"version: 1\nlimits: {memory: 1GiB, swap: 2GiB}\n", "p.yaml:2:"},
	} {
		_, err := ParsePolicy("p.yaml", []byte(tc.yaml))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error at %s", tc.yaml, err, tc.want)
		}
	}
}

func TestParsePolicySemanticErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"empty", "", []string{"p.yaml:1:1", "empty"}},
		{"version", "version: 2\nimages: {allowed: [a]}\nhelper: {image: a}\n", []string{"p.yaml:1:10: version"}},
		{"no images", "version: 1\nhelper: {image: a}\n", []string{"images.allowed", "no job could run"}},
		{"no helper", "version: 1\nimages: {allowed: [a]}\n", []string{"helper.image", "is required"}},
		{"bad rule", "version: 1\nimages: {allowed: [a]}\nhelper: {image: a}\negress:\n  default:\n    - ok.example.org\n    - \"bad rule\"\n", []string{"p.yaml:7:7: egress.default[1]"}},
		{"relative dir", "version: 1\nbuilds_dir: builds\nimages: {allowed: [a]}\nhelper: {image: a}\n", []string{"p.yaml:2:13: builds_dir"}},
		{"nested dirs", "version: 1\nbuilds_dir: /srv\ncache_dir: /srv/cache\nimages: {allowed: [a]}\nhelper: {image: a}\n", []string{"cache_dir"}},
		{"signing mode", "version: 1\nimages: {allowed: [a]}\nhelper: {image: a}\nsigning: {mode: gpg}\n", []string{"signing.mode", "keyless"}},
		{"signing key", "version: 1\nimages: {allowed: [a]}\nhelper: {image: a}\nsigning: {mode: key, key: cosign.key}\n", []string{"signing.key", "absolute"}},
		{"widen without maximum", "version: 1\nimages: {allowed: [a]}\nhelper: {image: a}\negress: {job_may_widen: true}\n", []string{"egress.job_may_widen"}},
		{"default not allowed", "version: 1\nimages: {allowed: [\"golang:*\"], default: \"alpine:3\"}\nhelper: {image: a}\n", []string{"images.default", "not allowed"}},
		{"bad variable", "version: 1\nimages: {allowed: [a]}\nhelper: {image: a}\nrunner_only_variables: [\"A-B\"]\n", []string{"runner_only_variables[0]"}},
		{"bad grace", "version: 1\nimages: {allowed: [a]}\nhelper: {image: a}\nstop_grace: 1h\n", []string{"stop_grace"}},
		{"bad runtime", "version: 1\nimages: {allowed: [a]}\nhelper: {image: a}\nruntime: kata\n", []string{"p.yaml:4:10: runtime", `"kata"`}},
		{"bad size", "version: 1\nimages: {allowed: [a]}\nhelper: {image: a}\nlimits: {memory: lots}\n", []string{"limits.memory"}},
		{"archive path", "version: 1\nimages: {allowed: [a]}\nhelper: {image: \"oci-archive:helper.tar\"}\n", []string{"helper.image", "absolute"}},
		{"type", "version: 1\nimages: {allowed: a}\n", []string{"p.yaml:2:"}},
		{"two documents", "version: 1\n---\nversion: 1\n", []string{"one YAML document"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePolicy("p.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestPolicyRuntime(t *testing.T) {
	p, err := ParsePolicy("p.yaml", []byte("version: 1\nimages: {allowed: [a]}\nhelper: {image: a}\nruntime: runsc\n"))
	if err != nil || p.Runtime != "runsc" {
		t.Fatalf("runtime %q, %v", p.Runtime, err)
	}
}

func TestLoadPolicyRefusesWritableFile(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP: the ownership check applies only when running as root")
	}
	p := filepath.Join(t.TempDir(), "gitlab.yaml")
	os.WriteFile(p, []byte(fullPolicy), 0o644)
	if _, err := LoadPolicy(p); err != nil {
		t.Fatalf("root-owned 0644: %v", err)
	}
	os.Chmod(p, 0o666)
	if _, err := LoadPolicy(p); err == nil || !strings.Contains(err.Error(), "writable by root only") {
		t.Fatalf("world-writable policy accepted: %v", err)
	}
	if _, err := LoadPolicy(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing policy: %v", err)
	}
}

// fullName is a repository's normalised name, as the reference library
// spells it for a reference without a registry host.
func fullName(repo string) string {
	n, err := reference.ParseNormalizedNamed(repo)
	if err != nil {
		panic(err)
	}
	return n.Name()
}

func TestImageAllowed(t *testing.T) {
	patterns := []string{
		fullName("golang") + ":*",
		"alpine:3.*",
		"registry.example.org/team/**",
		"!registry.example.org/team/untrusted/**",
		"oci-archive:/srv/images/*.tar",
	}
	for _, tc := range []struct {
		image string
		ok    bool
	}{
		{"golang:1.26", true},                               // familiar form, normalised by the reference library
		{fullName("golang") + ":1.26", true},                // full form
		{"golang", true},                                    // :latest
		{"golang@sha256:" + strings.Repeat("a", 64), false}, // a digest is not a tag
		{"evil.example/library/golang:1.26", false},
		{"alpine:3.20", true},
		{"alpine:edge", false},
		{"registry.example.org/team/builder:1", true},
		{"registry.example.org/team/sub/builder:1", true}, // ** crosses segments
		{"registry.example.org/team/untrusted/x:1", false},
		{"registry.example.org/other:1", false},
		{"oci-archive:/srv/images/builder.tar", true},
		{"oci-archive:/srv/images/sub/builder.tar", false}, // * stays in a segment
		{"oci-archive:/srv/images/../../etc/shadow.tar", false},
		{"oci-archive:images/builder.tar", false},
		{"docker-archive:/srv/images/builder.tar", false},
		{"", false},
	} {
		_, err := ImageAllowed(patterns, tc.image)
		if (err == nil) != tc.ok {
			t.Errorf("%q: allowed=%v (err %v), want %v", tc.image, err == nil, err, tc.ok)
		}
	}
}

// The commented example the docs point admins at must stay valid.
func TestExamplePolicyParses(t *testing.T) {
	b, err := os.ReadFile("../../examples/gitlab/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParsePolicy("examples/gitlab/policy.yaml", b)
	if err != nil {
		t.Fatal(err)
	}
	if p.HelperImage == "" || len(p.AllowedImages) == 0 || !p.JobMayWiden {
		t.Fatalf("%+v", p)
	}
}

func TestPolicyServicesAllowed(t *testing.T) {
	base := "version: 1\nimages:\n  allowed: [\"registry.example.org/**\"]\nhelper:\n  image: oci-archive:/srv/helper.tar\n"
	p, err := ParsePolicy("p.yaml", []byte(base+"services:\n  allowed: [\"registry.example.org/svc/*\"]\n"))
	if err != nil || len(p.AllowedServices) != 1 {
		t.Fatalf("services.allowed: %v %+v", err, p)
	}
	if _, err := ParsePolicy("p.yaml", []byte(base+"services:\n  allowed: [\"\"]\n")); err == nil || !strings.Contains(err.Error(), "services.allowed[0]") {
		t.Errorf("an empty pattern: %v", err)
	}
	if _, err := ParsePolicy("p.yaml", []byte(base+"services:\n  allow: [x]\n")); err == nil {
		t.Error("an unknown field under services is accepted")
	}
}
