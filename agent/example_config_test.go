package agent

import (
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/sign"
)

// TestExampleConfig keeps examples/agent/agent.yaml loadable and its
// values what its comments say.
func TestExampleConfig(t *testing.T) {
	const path = "../examples/agent/agent.yaml"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseConfig(path, data)
	if err != nil {
		t.Fatalf("the example configuration does not load:\n%v", err)
	}
	if c.Listen != "0.0.0.0:8443" || c.TLSCert == "" || c.TLSKey == "" {
		t.Errorf("listen %q, tls %q %q", c.Listen, c.TLSCert, c.TLSKey)
	}
	if c.DataDir != DefaultDataDir || c.Concurrency != 4 {
		t.Errorf("data_dir %q, concurrency %d", c.DataDir, c.Concurrency)
	}
	if c.NATSURL != "" || c.NATSReplicas != 1 || c.AckWait != 30*time.Second {
		t.Errorf("nats: url %q, replicas %d, ack_wait %s", c.NATSURL, c.NATSReplicas, c.AckWait)
	}
	if !slices.Equal(c.SourceAllow, []string{"git.example.org", "github.example.org"}) || c.SourceAllowHTTP || c.MaxUpload != DefaultMaxUpload {
		t.Errorf("source: allow %q, allow_http %v, max_upload %d", c.SourceAllow, c.SourceAllowHTTP, c.MaxUpload)
	}
	if !c.EgressCapped || !slices.Equal(c.EgressMaximum, []string{"*.example.org", "goproxy.example.org", "10.20.0.0/16:443"}) {
		t.Errorf("egress.maximum %v %q", c.EgressCapped, c.EgressMaximum)
	}
	if c.URL != "https://ci.example.org:8443" || c.Webhooks[0].Status == nil || c.Webhooks[0].Status.Kind != "github" || c.Webhooks[1].Status != nil {
		t.Errorf("url %q, statuses %+v %+v", c.URL, c.Webhooks[0].Status, c.Webhooks[1].Status)
	}
	if len(c.Secrets) != 1 || c.Secrets[0].Name != "DEPLOY_TOKEN" || c.Untrusted.BuilderID != "https://ci.example.org/cleanroom-agent-untrusted@v1" || !c.Webhooks[0].PullRequests {
		t.Errorf("secrets %+v, untrusted %+v, pull_requests %v", c.Secrets, c.Untrusted, c.Webhooks[0].PullRequests)
	}
	if len(c.ImagesAllowed) != 2 {
		t.Errorf("images.allowed %q", c.ImagesAllowed)
	}
	if c.JobTimeout != time.Hour || c.OnAgentLoss != OnLossRetry || c.MaxAttempts != 2 || c.Grace != 2*time.Minute {
		t.Errorf("jobs: timeout %s, on_agent_loss %q, max_attempts %d, grace %s", c.JobTimeout, c.OnAgentLoss, c.MaxAttempts, c.Grace)
	}
	if c.BuilderID != "https://ci.example.org/cleanroom-agent@v1" || c.GoProxyUpstream == "" || len(c.RunAllow) != 1 {
		t.Errorf("run: builder_id %q, goproxy_upstream %q, allow %q", c.BuilderID, c.GoProxyUpstream, c.RunAllow)
	}
	if c.Signing.Mode != sign.ModeKey || c.Signing.Key == "" || c.Signing.PasswordFile == "" {
		t.Errorf("signing %+v", c.Signing)
	}
	if len(c.Webhooks) != 2 {
		t.Fatalf("webhooks %+v", c.Webhooks)
	}
	gh, gl := c.Webhooks[0], c.Webhooks[1]
	if gh.Name != "app" || gh.Provider != "github" || gh.Pipeline != "ci/cleanroom.yaml" || len(gh.Refs) != 3 {
		t.Errorf("webhook app %+v", gh)
	}
	if gl.Name != "tools" || gl.Provider != "gitlab" || gl.Pipeline != "cleanroom.yaml" || gl.Refs != nil {
		t.Errorf("webhook tools %+v", gl)
	}
	for _, w := range c.Webhooks {
		if !strings.HasPrefix(w.SecretFile, "/etc/cleanroom/hooks/") {
			t.Errorf("webhook %s: secret_file %q", w.Name, w.SecretFile)
		}
	}
}
