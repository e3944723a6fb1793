package gitlab

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"

	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
)

// ParseEgressRequest splits the job's CLEANROOM_EGRESS_ALLOW value into
// rules: separated by commas, spaces or newlines.
func ParseEgressRequest(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool {
		return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r'
	})
}

// EffectiveAllow computes the user stages' allowlist: the policy's
// default plus what the job requested, where every requested rule must be
// covered by the policy's maximum. A job can only narrow what the admin
// allowed, never name something new: otherwise anyone who can push a
// .gitlab-ci.yml could open the sandbox to an exfiltration host.
//
// The error is the job's fault (a build failure), listing every rule that
// was refused.
func EffectiveAllow(p *Policy, requested []string) ([]string, error) {
	allow := slices.Clone(p.DefaultAllow)
	if len(requested) == 0 {
		return allow, nil
	}
	if !p.JobMayWiden {
		return nil, fmt.Errorf("the job sets %s but this runner does not let jobs widen egress (policy egress.job_may_widen is false); the allowlist is: [%s]",
			EgressRequestVariable, strings.Join(p.DefaultAllow, ", "))
	}
	var refused []string
	for _, s := range requested {
		r, err := egress.ParseRule(s)
		if err != nil {
			refused = append(refused, fmt.Sprintf("%q (%v)", s, err))
			continue
		}
		if !egress.CoveredBy(r, p.MaximumAllow) {
			refused = append(refused, fmt.Sprintf("%q", s))
			continue
		}
		if !slices.Contains(allow, r.String()) {
			allow = append(allow, r.String())
		}
	}
	if len(refused) > 0 {
		return nil, fmt.Errorf("%s asks for egress the runner's policy does not allow: %s; a job may only choose entries within egress.maximum: [%s]",
			EgressRequestVariable, strings.Join(refused, ", "), strings.Join(p.MaximumAllow, ", "))
	}
	return allow, nil
}

// ServerRule is the egress rule for the GitLab instance at serverURL
// (CI_SERVER_URL): its host and port, the scheme's default port when none
// is written. An IP-literal host becomes an IP rule, which is the only way
// the proxy allows a loopback or private address ("localhost" becomes
// 127.0.0.1 for the same reason).
func ServerRule(serverURL string) (string, error) {
	u, err := url.Parse(serverURL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("CI_SERVER_URL %q is not an http(s) URL", serverURL)
	}
	port := u.Port()
	if port == "" {
		port = "443"
		if u.Scheme == "http" {
			port = "80"
		}
	}
	host := u.Hostname()
	if r, ok := loopbackRule(host, port); ok {
		return r, nil
	}
	rule := net.JoinHostPort(host, port)
	r, err := egress.ParseRule(rule)
	if err != nil {
		return "", fmt.Errorf("CI_SERVER_URL %q: %w", serverURL, err)
	}
	return r.String(), nil
}
