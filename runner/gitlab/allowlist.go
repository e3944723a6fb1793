package gitlab

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
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
		if !coveredBy(r, p.MaximumAllow) {
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

func coveredBy(r egress.Rule, maximum []string) bool {
	for _, m := range maximum {
		mr, err := egress.ParseRule(m)
		if err == nil && Covers(mr, r) {
			return true
		}
	}
	return false
}

// Covers reports whether every destination that rule r allows is also
// allowed by max. Ports: a rule without a port means 80 and 443.
// Names: an exact name is covered by the same name or a wildcard above
// it; a wildcard only by a wildcard at or above its suffix. Addresses: a
// prefix only by a prefix containing it. Names and addresses never cover
// each other, as in the proxy (a name never grants a private address).
func Covers(max, r egress.Rule) bool {
	ports := []int{r.Port()}
	if r.Port() == 0 {
		ports = []int{80, 443}
	}
	host, _, err := splitCanonical(r.String())
	if err != nil {
		return false
	}
	for _, port := range ports {
		if !coversOne(max, r, host, port) {
			return false
		}
	}
	return true
}

func coversOne(max, r egress.Rule, host string, port int) bool {
	if r.IsIP() {
		if !max.IsIP() {
			return false
		}
		pfx, err := parsePrefix(host)
		if err != nil {
			return false
		}
		return max.MatchAddr(pfx.Masked().Addr(), port) && max.MatchAddr(lastAddr(pfx), port)
	}
	if max.IsIP() {
		return false
	}
	if suffix, ok := strings.CutPrefix(host, "*."); ok {
		// A wildcard is covered only by a wildcard at or above its suffix:
		// then any name one label below the suffix is matched by max.
		if !strings.HasPrefix(max.String(), "*.") {
			return false
		}
		return max.MatchName("x."+suffix, port)
	}
	return max.MatchName(host, port)
}

// splitCanonical splits a rule's canonical String() form into host (or
// prefix) and port.
func splitCanonical(s string) (string, int, error) {
	if strings.HasPrefix(s, "[") {
		h, p, err := net.SplitHostPort(s)
		if err != nil {
			return "", 0, err
		}
		n, err := strconv.Atoi(p)
		return h, n, err
	}
	if strings.Count(s, ":") == 1 {
		h, p, _ := strings.Cut(s, ":")
		n, err := strconv.Atoi(p)
		return h, n, err
	}
	return s, 0, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// lastAddr is the highest address of a prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		for j := 0; j < 8; j++ {
			if i*8+j >= bits {
				b[i] |= 0x80 >> j
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
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
