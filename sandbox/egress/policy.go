package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Policy is an immutable set of rules. A nil or empty Policy denies
// everything.
type Policy struct {
	rules []Rule            // canonical, de-duplicated, in input order
	exact map[string][]Rule // name rules by host
	wild  map[string][]Rule // wildcard rules by suffix
	ips   []Rule            // IP and CIDR rules
}

// NewPolicy parses rules. Every invalid rule is reported, not just the
// first, so a user fixes the list in one go.
func NewPolicy(rules []string) (*Policy, error) {
	p := &Policy{exact: map[string][]Rule{}, wild: map[string][]Rule{}}
	seen := map[string]bool{}
	var errs []error
	for _, s := range rules {
		r, err := ParseRule(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		key := r.String()
		if seen[key] {
			continue
		}
		seen[key] = true
		p.rules = append(p.rules, r)
		switch r.kind {
		case kindName:
			p.exact[r.name] = append(p.exact[r.name], r)
		case kindWildcard:
			p.wild[r.name] = append(p.wild[r.name], r)
		case kindPrefix:
			p.ips = append(p.ips, r)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

// Rules returns the canonical form of every rule.
func (p *Policy) Rules() []string {
	if p == nil {
		return nil
	}
	out := make([]string, len(p.rules))
	for i, r := range p.rules {
		out[i] = r.String()
	}
	return out
}

// matchName returns the first name rule that allows host:port. host must be
// normalised. Lookups go through maps so that cost grows with the number of
// labels in host, not with the size of the policy.
func (p *Policy) matchName(host string, port int) (Rule, bool) {
	if p == nil {
		return Rule{}, false
	}
	for _, r := range p.exact[host] {
		if r.matchPort(port) {
			return r, true
		}
	}
	for i := 0; i < len(host); i++ {
		if host[i] != '.' {
			continue
		}
		for _, r := range p.wild[host[i+1:]] {
			if r.matchPort(port) {
				return r, true
			}
		}
	}
	return Rule{}, false
}

// matchAddr returns the first IP or CIDR rule that allows a:port.
func (p *Policy) matchAddr(a netip.Addr, port int) (Rule, bool) {
	if p == nil {
		return Rule{}, false
	}
	for _, r := range p.ips {
		if r.MatchAddr(a, port) {
			return r, true
		}
	}
	return Rule{}, false
}

// Decision is the outcome of checking one destination.
type Decision struct {
	Allowed bool
	// Rule is the canonical rule that allowed the request ("" when denied
	// or allowed only by audit mode).
	Rule string
	// Reason says why, in words fit for a log line.
	Reason string
	// Addr is the address to connect to; Addrs are all checked addresses
	// in the order to try them (Addr first). Nothing else may be dialed.
	Addr  netip.Addr
	Addrs []netip.Addr
	// Audit is set when only audit mode allowed the request.
	Audit bool
	// Hint is the allowlist entry that would allow a denied (or
	// audit-allowed) request, or "" when no rule could.
	Hint string
	// Class is the class of the special address that caused a denial.
	Class Class
	// Special is set when the denial is about a special address: audit
	// mode does not lift such denials.
	Special bool
}

// Decide checks host:port against the policy. host is as the client wrote
// it (it is normalised here); addrs are what the name resolved to and are
// ignored for IP literals.
//
// Name rules match names and IP/CIDR rules match addresses. A name that
// matches a name rule is allowed only if every address it resolved to is
// public or covered by an IP/CIDR rule: names never reach special
// addresses, whatever DNS says. An IP literal is allowed only by an IP/CIDR
// rule. A name with no matching name rule is denied even if its addresses
// are covered by IP rules, so that a DNS change cannot widen what names a
// step may reach.
func (p *Policy) Decide(host string, port int, addrs []netip.Addr) Decision {
	return p.decide(host, port, addrs, false)
}

// NeedsResolve reports whether Decide could allow host:port and therefore
// needs its addresses. Names without a matching rule are not resolved at
// all in enforce mode: a DNS query is itself egress (and an exfiltration
// channel).
func (p *Policy) NeedsResolve(host string, port int) bool {
	h, _, isIP, err := NormalizeHost(host)
	if err != nil || isIP {
		return false
	}
	_, ok := p.matchName(h, port)
	return ok
}

// decide implements Decide; with audit set, a missing rule does not deny
// (Audit and Hint are set instead), but special addresses and invalid hosts
// still do.
func (p *Policy) decide(host string, port int, addrs []netip.Addr, audit bool) Decision {
	if port < 1 || port > 65535 {
		return Decision{Reason: fmt.Sprintf("invalid port %d", port)}
	}
	h, ip, isIP, err := NormalizeHost(host)
	if err != nil {
		return Decision{Reason: "invalid host: " + err.Error()}
	}
	if isIP {
		return p.decideIP(ip, port, audit)
	}
	hint := hostPort(h, port)
	rule, ok := p.matchName(h, port)
	if !ok && !audit {
		return Decision{Reason: "no rule matches", Hint: hint}
	}
	checked := make([]netip.Addr, 0, len(addrs))
	var licensed []string
	for _, a := range addrs {
		a = a.Unmap().WithZone("")
		if !a.IsValid() || containsAddr(checked, a) {
			continue
		}
		if c := Classify(a); IsSpecial(c) {
			r, ok := p.matchAddr(a, port)
			if !ok {
				return Decision{
					Reason: fmt.Sprintf("%s resolved to %s, a %s address; names never reach special addresses, only an IP/CIDR rule such as %q can allow that",
						h, a, c, hostPort(a.String(), port)),
					Hint:    hostPort(a.String(), port),
					Class:   c,
					Special: true,
				}
			}
			licensed = append(licensed, fmt.Sprintf("%s (%s) by %s", a, c, r))
		}
		checked = append(checked, a)
	}
	if len(checked) == 0 {
		return Decision{Reason: h + " resolved to no addresses", Hint: hint}
	}
	d := Decision{Allowed: true, Addr: checked[0], Addrs: checked}
	if ok {
		d.Rule = rule.String()
		d.Reason = "matched " + d.Rule
	} else {
		d.Audit, d.Hint = true, hint
		d.Reason = "audit mode: no rule matches"
	}
	if len(licensed) > 0 {
		d.Reason += "; special addresses allowed: " + strings.Join(licensed, ", ")
	}
	return d
}

func (p *Policy) decideIP(ip netip.Addr, port int, audit bool) Decision {
	hint := hostPort(ip.String(), port)
	if r, ok := p.matchAddr(ip, port); ok {
		return Decision{Allowed: true, Rule: r.String(), Reason: "matched " + r.String(), Addr: ip, Addrs: []netip.Addr{ip}}
	}
	if c := Classify(ip); IsSpecial(c) {
		return Decision{
			Reason:  fmt.Sprintf("%s is a %s address; only an IP/CIDR rule such as %q can allow it", ip, c, hint),
			Hint:    hint,
			Class:   c,
			Special: true,
		}
	}
	if audit {
		return Decision{Allowed: true, Audit: true, Hint: hint, Reason: "audit mode: no rule matches", Addr: ip, Addrs: []netip.Addr{ip}}
	}
	return Decision{Reason: "no rule matches (IP addresses are allowed only by IP/CIDR rules)", Hint: hint}
}

// hostPort formats host and port the way a rule with an explicit port is
// written.
func hostPort(host string, port int) string {
	if strings.IndexByte(host, ':') >= 0 {
		host = "[" + host + "]"
	}
	return host + ":" + strconv.Itoa(port)
}

func containsAddr(list []netip.Addr, a netip.Addr) bool {
	for _, b := range list {
		if a == b {
			return true
		}
	}
	return false
}
