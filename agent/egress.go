package agent

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
)

// checkEgress holds a pipeline's egress rules against the admin's cap,
// the model of the GitLab driver's egress.maximum: a pipeline comes from
// whoever can push to a repository, and the egress proxy serves it from
// the agent's host, so an IP rule the pipeline writes itself would reach
// the host's loopback (the agent's API, the NATS monitoring port), the
// cloud metadata service or the internal network.
//
// With egress.maximum set, every rule must be covered by one of its rules
// (egress.Covers), and audit mode, which allows any name, is refused.
// Without it, names are free (the proxy never lets a name reach a special
// address) and an IP rule must name public addresses only, none of them
// this host's own. Every refused rule is named, with its place in the
// file.
func checkEgress(p *pipeline.Pipeline, maximum []string, capped bool, own []netip.Addr) error {
	var refused []string
	at := func(field string) string {
		if pos, ok := p.Position(field); ok {
			return fmt.Sprintf("%s:%d: %s", filepath.Base(p.Path), pos.Line, field)
		}
		return field
	}
	check := func(field, s string) {
		r, err := egress.ParseRule(s)
		if err != nil {
			refused = append(refused, fmt.Sprintf("%s: %v", at(field), err))
			return
		}
		if capped {
			if !egress.CoveredBy(r, maximum) {
				refused = append(refused, fmt.Sprintf("%s: %q is not within egress.maximum", at(field), s))
			}
			return
		}
		if !r.IsIP() {
			return
		}
		if c := egress.PrefixClass(r.Prefix()); c != egress.ClassPublic {
			refused = append(refused, fmt.Sprintf("%s: %q reaches %s addresses", at(field), s, c))
			return
		}
		for _, a := range own {
			if r.Prefix().Contains(a) {
				refused = append(refused, fmt.Sprintf("%s: %q reaches this agent's own address %s", at(field), s, a))
				return
			}
		}
	}
	for i, s := range p.Egress.Allow {
		check(fmt.Sprintf("egress.allow[%d]", i), s)
	}
	if capped && p.Egress.Mode == pipeline.EgressAudit {
		refused = append(refused, at("egress.mode")+": audit mode allows any host, and this agent caps egress (egress.maximum)")
	}
	for i, st := range p.Steps {
		if st.Egress == nil {
			continue
		}
		for j, s := range st.Egress.Allow {
			check(fmt.Sprintf("steps[%d].egress.allow[%d]", i, j), s)
		}
		if capped && st.Egress.Mode == pipeline.EgressAudit {
			refused = append(refused, at(fmt.Sprintf("steps[%d].egress.mode", i))+": audit mode allows any host, and this agent caps egress (egress.maximum)")
		}
	}
	if len(refused) == 0 {
		return nil
	}
	limit := "by default an IP rule may name public addresses only; the agent's admin can allow more in egress.maximum"
	if capped {
		limit = "a pipeline may only use egress within egress.maximum: [" + strings.Join(maximum, ", ") + "]"
	}
	return fmt.Errorf("egress refused by this agent's policy: %s; %s", strings.Join(refused, "; "), limit)
}

// ownAddrs are the addresses of this host's interfaces: by default no
// pipeline rule may name them (the agent and NATS may listen there).
func ownAddrs() []netip.Addr {
	var out []netip.Addr
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}
