package egress

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// An admin's maximum bounds the rules a build may ask for: a rule is
// accepted only when a rule of the maximum covers it. Both the GitLab
// driver (a job's CLEANROOM_EGRESS_ALLOW) and the agent (a pipeline's
// egress.allow) check requests this way.

// CoveredBy reports whether some rule of maximum covers r (see Covers).
func CoveredBy(r Rule, maximum []string) bool {
	for _, m := range maximum {
		mr, err := ParseRule(m)
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
func Covers(max, r Rule) bool {
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

func coversOne(max, r Rule, host string, port int) bool {
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

// Overlaps reports whether some destination (host and port) is allowed by
// both a and b: a step rule that overlaps a rule which must be inspected
// can reach that rule's hosts, whatever its spelling (case, a trailing dot,
// an explicit default port, a wildcard above the host). As in Covers and
// the proxy, names and addresses never overlap.
func Overlaps(a, b Rule) bool {
	portShared := false
	for _, p := range a.ports() {
		if b.matchPort(p) {
			portShared = true
		}
	}
	if !portShared {
		return false
	}
	switch {
	case a.kind == kindPrefix || b.kind == kindPrefix:
		return a.kind == b.kind && a.prefix.Overlaps(b.prefix)
	case a.kind == kindName && b.kind == kindName:
		return a.name == b.name
	case a.kind == kindName && b.kind == kindWildcard:
		return below(a.name, b.name)
	case a.kind == kindWildcard && b.kind == kindName:
		return below(b.name, a.name)
	case a.kind == kindWildcard && b.kind == kindWildcard:
		// Two wildcards share the names below the longer suffix when one
		// suffix is at or below the other.
		return a.name == b.name || below(a.name, b.name) || below(b.name, a.name)
	}
	return false
}

// ports lists the ports a rule allows.
func (r Rule) ports() []int {
	if r.port == 0 {
		return []int{80, 443}
	}
	return []int{r.port}
}

// below reports whether name is one or more labels below suffix.
func below(name, suffix string) bool {
	return len(name) > len(suffix)+1 && strings.HasSuffix(name, suffix) && name[len(name)-len(suffix)-1] == '.'
}

// Prefix returns the addresses an IP rule allows (invalid for a name
// rule).
func (r Rule) Prefix() netip.Prefix {
	if r.kind != kindPrefix {
		return netip.Prefix{}
	}
	return r.prefix
}

// PrefixClass is ClassPublic when every address of p is public, else the
// class of a special range p reaches into: a policy that lets builds
// write their own IP rules uses it to refuse rules that would reach the
// host's loopback, the metadata service or the internal network.
func PrefixClass(p netip.Prefix) Class {
	if !p.IsValid() {
		return ClassReserved
	}
	p = p.Masked()
	if p.IsSingleIP() {
		return Classify(p.Addr())
	}
	if p.Addr().Is4() {
		for _, r := range v4Special {
			b := [4]byte{byte(r.base >> 24), byte(r.base >> 16), byte(r.base >> 8), byte(r.base)}
			if netip.PrefixFrom(netip.AddrFrom4(b), int(r.bits)).Overlaps(p) {
				return r.class
			}
		}
		return ClassPublic
	}
	// IPv6: only global unicast outside the special blocks, and outside
	// 6to4, whose addresses lead to any IPv4 address.
	if p.Bits() < v6Global.Bits() || !v6Global.Contains(p.Addr()) {
		return ClassReserved
	}
	for _, r := range v6Special {
		if r.prefix.Overlaps(p) {
			return r.class
		}
	}
	if v6To4.Overlaps(p) {
		return ClassReserved
	}
	return ClassPublic
}
