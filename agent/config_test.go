package agent

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
	"github.com/cleanroom-ci/cleanroom/sign"
)

func TestConfigDefaults(t *testing.T) {
	c, err := ParseConfig("agent.yaml", []byte("version: 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != DefaultListen || c.DataDir != DefaultDataDir || c.Concurrency != runtime.NumCPU() ||
		c.NATSURL != "" || c.NATSReplicas != 1 || c.AckWait != 30*time.Second || c.OnAgentLoss != OnLossRetry ||
		c.MaxAttempts != 2 || c.Grace != 2*time.Minute || c.Retention != 30*24*time.Hour || c.JobTimeout != time.Hour || c.Signing.Mode != sign.ModeNone ||
		c.MaxUpload != DefaultMaxUpload || c.BuilderID != DefaultBuilderID || len(c.SourceAllow) != 0 || len(c.ImagesAllowed) != 0 {
		t.Fatalf("defaults: %+v", c)
	}
	// An empty file is all defaults too.
	if _, err := ParseConfig("agent.yaml", nil); err != nil {
		t.Fatal(err)
	}
}

func TestConfigRuntimeForcesTheChildsRuntime(t *testing.T) {
	c, err := ParseConfig("agent.yaml", []byte("version: 1\nrun:\n  runtime: runsc\n"))
	if err != nil || c.Runtime != "runsc" {
		t.Fatalf("runtime %q, %v", c.Runtime, err)
	}
	a := &Agent{cfg: c}
	args, _, err := a.childArgs("cleanroom.yaml", "/ws", "/out", false)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(args, " "), "--force-runtime runsc") {
		t.Fatalf("child args %q do not force the runtime", args)
	}
}

func TestConfigErrorsNameFileLineAndField(t *testing.T) {
	cases := []struct {
		yaml string
		want string
	}{
		{"version: 1\nlistn: x\n", "agent.yaml:2:1:"},
		{"version: 2\n", "agent.yaml:1:10: version: unsupported version 2"},
		{"version: 1\nlisten: nowhere\n", "agent.yaml:2:9: listen:"},
		{"version: 1\ndata_dir: relative/dir\n", "data_dir: must be an absolute path"},
		{"version: 1\nnats:\n  ack_wait: soon\n", "agent.yaml:3:13: nats.ack_wait:"},
		{"version: 1\nsource:\n  allow: [\"*\"]\n", "agent.yaml:3:11: source.allow:"},
		{"version: 1\nsource:\n  max_upload: lots\n", "source.max_upload:"},
		{"version: 1\nimages:\n  allowed: [\"[\"]\n", "images.allowed:"},
		{"version: 1\njobs:\n  on_agent_loss: maybe\n", "agent.yaml:3:18: jobs.on_agent_loss: \"maybe\": use retry"},
		{"version: 1\njobs:\n  timeout: -1m\n", "jobs.timeout:"},
		{"version: 1\njobs:\n  retention: forever\n", "jobs.retention:"},
		{"version: 1\nsigning:\n  mode: key\n", "signing.key: mode key needs key"},
		{"version: 1\nsigning:\n  mode: keyless\n", "signing.identity_token_file:"},
		{"version: 1\nsigning:\n  mode: sometimes\n", "signing.mode:"},
		{"version: 1\nrun:\n  runtime: kata\n", "agent.yaml:3:12: run.runtime: \"kata\""},
		{"version: 1\ntls:\n  cert: /c.pem\n", "tls: set both cert and key"},
		{"version: 1\negress:\n  maximum: [\"10.0.0.1/8\"]\n", "egress.maximum:"},
		{"version: 1\nurl: ci.example.org\n", "url: \"ci.example.org\""},
		{"version: 1\njobs:\n  repository_concurrency: -1\n", "jobs.repository_concurrency:"},
		{"version: 1\nsecrets:\n  - {name: PATH, file: /s, repositories: [x]}\n", "secrets.name: \"PATH\""},
		{"version: 1\nsecrets:\n  - {name: A, file: /s, dir: /d, repositories: [x]}\n", "give file"},
		{"version: 1\nsecrets:\n  - {name: A, file: /s}\n", "secrets.repositories:"},
		{"version: 1\nuntrusted:\n  builder_id: https://cleanroom.dev/builder/agent@v1\n", "untrusted.builder_id: must differ"},
		{"version: 1\nuntrusted:\n  egress_maximum: [\"*\"]\n", "untrusted.egress_maximum"},
		{"version: 1\nwebhooks:\n  - {name: a, provider: github, secret_file: /s, repository: \"https://g.example.org/a.git\", status: {api: \"https://api.example.org\", repository: a, token_file: /t}}\n", "webhooks.status: status.repository \"a\""},
		{"version: 1\nwebhooks:\n  - {name: a, provider: github, secret_file: /s, repository: \"https://g.example.org/a.git\", status: {kind: bitbucket, api: \"https://api.example.org\", repository: a/b, token_file: /t}}\n", "status.kind \"bitbucket\""},
		{"version: 1\nwebhooks:\n  - {name: a, provider: github, secret_file: /s, repository: \"https://g.example.org/a.git\", status: {api: \"http://api.example.org\", repository: a/b, token_file: /t}}\n", "webhooks.status.api:"},
		{"version: 1\nwebhooks:\n  - {name: a, provider: github, secret_file: /s, repository: \"https://g.example.org/a.git\", status: {api: \"https://api.example.org\", repository: a/b, token_file: t}}\n", "webhooks.status.token_file:"},
		{"version: 1\negress:\n  maximun: []\n", "agent.yaml:3:"},
		{"version: 1\nwebhooks:\n  - name: a/b\n    provider: github\n    secret_file: /s\n    repository: https://git.example.org/a.git\n", "agent.yaml:3:11: webhooks.name:"},
		{"version: 1\nwebhooks:\n  - name: a\n    provider: gitea\n    secret_file: /s\n    repository: https://git.example.org/a.git\n", "webhooks.provider: \"gitea\""},
		{"version: 1\nwebhooks:\n  - name: a\n    provider: github\n    repository: https://git.example.org/a.git\n", "webhooks.secret_file: a webhook needs a secret"},
		{"version: 1\nwebhooks:\n  - name: a\n    provider: github\n    secret_file: /s\n    repository: http://git.example.org/a.git\n", "webhooks.repository:"},
		{"version: 1\nwebhooks:\n  - {name: a, provider: github, secret_file: /s, repository: \"https://g.example.org/a.git\"}\n  - {name: a, provider: github, secret_file: /s, repository: \"https://g.example.org/a.git\"}\n", "\"a\" is used twice"},
	}
	for _, c := range cases {
		_, err := ParseConfig("agent.yaml", []byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want an error containing %q", c.yaml, err, c.want)
		}
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "agent.yaml")
	if _, err := LoadConfig(p, false); err != nil {
		t.Fatalf("missing default config: %v", err)
	}
	if _, err := LoadConfig(p, true); err == nil {
		t.Fatal("a config named on the command line must exist")
	}
}

func TestCheckImages(t *testing.T) {
	ws := t.TempDir()
	os.MkdirAll(filepath.Join(ws, "images"), 0o755)
	os.WriteFile(filepath.Join(ws, "images", "b.tar"), []byte("x"), 0o644)
	outside := filepath.Join(t.TempDir(), "other.tar")
	os.WriteFile(outside, []byte("x"), 0o644)
	// A symlink in the source pointing at the host's archive is outside.
	os.Symlink(outside, filepath.Join(ws, "images", "link.tar"))
	load := func(image string) *pipeline.Pipeline {
		t.Helper()
		p, err := pipeline.Parse(filepath.Join(ws, "cleanroom.yaml"), []byte("version: 1\nimage: "+image+"\nsteps:\n  - name: s\n    run: echo\n"))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		image   string
		allowed []string
		ok      bool
	}{
		{"oci-archive:./images/b.tar", nil, true},
		{"oci-archive:" + outside, nil, false},
		{"oci-archive:./images/link.tar", nil, false},
		{"oci-archive:" + outside, []string{"oci-archive:" + filepath.Dir(outside) + "/*"}, true},
		{"registry.example.org/team/builder:1", nil, false},
		{"registry.example.org/team/builder:1", []string{"registry.example.org/team/*"}, true},
		{"registry.example.org/other/builder:1", []string{"registry.example.org/team/*"}, false},
		// The GitLab policy's dialect: ** across segments, !pattern excludes
		// wherever it stands, the familiar and the full name both match.
		{"registry.example.org/team/sub/builder:1", []string{"registry.example.org/team/*"}, false},
		{"registry.example.org/team/sub/builder:1", []string{"registry.example.org/team/**"}, true},
		{"registry.example.org/team/untrusted/x:1", []string{"!registry.example.org/team/untrusted/**", "registry.example.org/team/**"}, false},
		{"registry.example.org/team/x:1", []string{"registry.example.org/team/**", "!registry.example.org/team/untrusted/**"}, true},
		{"registry.example.org/team/x:1", []string{"registry.example.org/team/*", "!registry.example.org/team/x:*"}, false},
		{"docker.io/library/alpine:3.20", []string{"alpine:3.*"}, true},
		{"oci-archive:" + outside, []string{"oci-archive:/**", "!oci-archive:" + outside}, false},
	}
	for _, c := range cases {
		err := checkImages(load(c.image), ws, c.allowed)
		if (err == nil) != c.ok {
			t.Errorf("%s with %v: %v", c.image, c.allowed, err)
		}
	}
	// A service's image is held to the same rule as a step's: an allowed
	// step image does not let a service name the host's archive.
	for _, c := range cases {
		p, err := pipeline.Parse(filepath.Join(ws, "cleanroom.yaml"), []byte("version: 1\nimage: oci-archive:./images/b.tar\nsteps:\n  - name: s\n    run: echo\n    services: [{image: \""+c.image+"\", alias: svc}]\n"))
		if err != nil {
			t.Fatal(err)
		}
		err = checkImages(p, ws, c.allowed)
		if (err == nil) != c.ok || (err != nil && !strings.Contains(err.Error(), `service "svc"`)) {
			t.Errorf("service image %s with %v: %v", c.image, c.allowed, err)
		}
	}
}

func TestGitOptionsPickTheHostsCredential(t *testing.T) {
	dir := t.TempDir()
	hdr := filepath.Join(dir, "git-auth")
	os.WriteFile(hdr, []byte("Authorization: Basic dXNlcjpwYXNz\n"), 0o600)
	yaml := "version: 1\nsource:\n  allow: [git.example.org]\n  credentials:\n    - {host: git.example.org, header_file: " + hdr + "}\n    - {host: \"other.example.org:8443\", header_file: /nonexistent}\n"
	c, err := ParseConfig("agent.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{cfg: c, log: hclog.NewNullLogger()}
	o, err := a.gitOptions("https://git.example.org/team/app.git")
	if err != nil || o.AuthHeader != "Authorization: Basic dXNlcjpwYXNz" || len(o.Allow) != 1 {
		t.Fatalf("options for the credential's host: %+v %v", o, err)
	}
	if o, err := a.gitOptions("https://public.example.org/app.git"); err != nil || o.AuthHeader != "" {
		t.Fatalf("another host got a credential: %+v %v", o, err)
	}
	if _, err := a.gitOptions("https://other.example.org:8443/app.git"); err == nil {
		t.Fatal("an unreadable header file must fail the fetch, not fetch without it")
	}
	for _, bad := range []string{
		"version: 1\nsource:\n  credentials: [{host: \"https://x\", header_file: /h}]\n",
		"version: 1\nsource:\n  credentials: [{host: x.example.org, header_file: rel}]\n",
	} {
		if _, err := ParseConfig("agent.yaml", []byte(bad)); err == nil || !strings.Contains(err.Error(), "source.credentials") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
