package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// AcceptedForms is quoted in every rule error so that a user who got a rule
// wrong sees at once what would have been right.
const AcceptedForms = `accepted forms: "host", "*.suffix", "host:port", "*.suffix:port", ` +
	`"1.2.3.4", "1.2.3.4:port", "::1", "[::1]:port", ` +
	`"10.0.0.0/8", "10.0.0.0/8:port", "fd00::/8", "[fd00::/8]:port" ` +
	`(no port means ports 80 and 443)`

type ruleKind uint8

const (
	kindName     ruleKind = iota + 1 // exact host name
	kindWildcard                     // *.suffix: one or more labels below suffix
	kindPrefix                       // IP address (full-length prefix) or CIDR
)

// Rule is one parsed allowlist entry. The zero Rule matches nothing.
type Rule struct {
	kind   ruleKind
	name   string       // host, or the suffix (without "*.") of a wildcard
	prefix netip.Prefix // kindPrefix only; always masked and unmapped
	port   int          // 0 means 80 and 443
}

// ParseRule parses one allowlist entry. Names are case-insensitive,
// IDNA-normalised to punycode and may end in a dot. IPv6 addresses and
// prefixes need brackets only when a port follows. An address must be
// written in its standard form (1.2.3.4, not 0x01020304): odd spellings in
// a policy are more likely a mistake than intent. A CIDR prefix must have no
// host bits set, for the same reason.
func ParseRule(s string) (Rule, error) {
	r, err := parseRule(strings.TrimSpace(s))
	if err != nil {
		return Rule{}, fmt.Errorf("egress rule %q: %v; %s", s, err, AcceptedForms)
	}
	return r, nil
}

func parseRule(s string) (Rule, error) {
	if s == "" {
		return Rule{}, errors.New("empty rule")
	}
	hostPart, port, bracketed, err := splitRule(s)
	if err != nil {
		return Rule{}, err
	}
	if bracketed || strings.ContainsAny(hostPart, ":/") {
		p, err := parseRulePrefix(hostPart, bracketed)
		if err != nil {
			return Rule{}, err
		}
		return Rule{kind: kindPrefix, prefix: p, port: port}, nil
	}
	if suffix, ok := strings.CutPrefix(hostPart, "*."); ok {
		if strings.Contains(suffix, "*") {
			return Rule{}, errors.New(`"*" is only allowed as the whole first label`)
		}
		name, _, isIP, err := NormalizeHost(suffix)
		if err != nil {
			return Rule{}, err
		}
		if isIP {
			return Rule{}, errors.New("a wildcard suffix must be a name, not an address")
		}
		return Rule{kind: kindWildcard, name: name, port: port}, nil
	}
	if strings.Contains(hostPart, "*") {
		return Rule{}, errors.New(`"*" is only allowed as the whole first label`)
	}
	name, ip, isIP, err := NormalizeHost(hostPart)
	if err != nil {
		return Rule{}, err
	}
	if isIP {
		if a, err := netip.ParseAddr(hostPart); err != nil || !a.Is4() {
			return Rule{}, fmt.Errorf("write IPv4 addresses in dotted-decimal form (%s)", ip)
		}
		return Rule{kind: kindPrefix, prefix: netip.PrefixFrom(ip, ip.BitLen()), port: port}, nil
	}
	return Rule{kind: kindName, name: name, port: port}, nil
}

// splitRule separates an optional port. Bare IPv6 (more than one colon, no
// brackets) never carries a port: "::1:80" would be ambiguous.
func splitRule(s string) (host string, port int, bracketed bool, err error) {
	if s[0] == '[' {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", 0, false, errors.New("missing ']'")
		}
		host, rest := s[1:end], s[end+1:]
		if rest == "" {
			return host, 0, true, nil
		}
		if rest[0] != ':' {
			return "", 0, false, errors.New("unexpected text after ']'")
		}
		port, err := parsePort(rest[1:])
		return host, port, true, err
	}
	switch strings.Count(s, ":") {
	case 0:
		return s, 0, false, nil
	case 1:
		i := strings.IndexByte(s, ':')
		port, err := parsePort(s[i+1:])
		return s[:i], port, false, err
	default:
		return s, 0, false, nil
	}
}

// parsePort accepts 1-65535 in plain decimal.
func parsePort(s string) (int, error) {
	if s == "" || len(s) > 5 || !allDigits(s) || s[0] == '0' {
		return 0, fmt.Errorf("invalid port %q (want 1-65535)", s)
	}
	n, _ := strconv.Atoi(s)
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("invalid port %q (want 1-65535)", s)
	}
	return n, nil
}

// parseRulePrefix parses an IPv6 address, or an IPv4/IPv6 CIDR prefix.
// Prefixes inside ::ffff:0:0/96 are turned into the IPv4 prefix they denote,
// matching how addresses are unmapped before they are checked.
func parseRulePrefix(s string, bracketed bool) (netip.Prefix, error) {
	if strings.IndexByte(s, '%') >= 0 {
		return netip.Prefix{}, errors.New("IPv6 zones are not allowed")
	}
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid address %q", s)
		}
		if bracketed && a.Is4() {
			return netip.Prefix{}, errors.New("brackets are only for IPv6")
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR prefix %q", s)
	}
	if bracketed && p.Addr().Is4() {
		return netip.Prefix{}, errors.New("brackets are only for IPv6")
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("prefix %q has host bits set (did you mean %s?)", s, p.Masked())
	}
	if p.Addr().Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("prefix %q mixes IPv4-mapped and other IPv6 space", s)
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p, nil
}

// String returns the canonical form, which ParseRule accepts and maps back
// to an equal Rule.
func (r Rule) String() string {
	var host string
	switch r.kind {
	case kindName:
		host = r.name
	case kindWildcard:
		host = "*." + r.name
	case kindPrefix:
		if r.prefix.IsSingleIP() {
			host = r.prefix.Addr().String()
		} else {
			host = r.prefix.String()
		}
		if r.port != 0 && r.prefix.Addr().Is6() {
			host = "[" + host + "]"
		}
	default:
		return ""
	}
	if r.port != 0 {
		return host + ":" + strconv.Itoa(r.port)
	}
	return host
}

// IsIP reports whether r is an address or CIDR rule (as opposed to a name
// rule). Only such rules can allow special addresses.
func (r Rule) IsIP() bool { return r.kind == kindPrefix }

// Port returns the rule's port, or 0 for the default ports 80 and 443.
func (r Rule) Port() int { return r.port }

func (r Rule) matchPort(port int) bool {
	if r.port == 0 {
		return port == 80 || port == 443
	}
	return port == r.port
}

// MatchName reports whether r allows the normalised name host on port. IP
// and CIDR rules never match names.
func (r Rule) MatchName(host string, port int) bool {
	if !r.matchPort(port) {
		return false
	}
	switch r.kind {
	case kindName:
		return host == r.name
	case kindWildcard:
		return below(host, r.name)
	}
	return false
}

// MatchAddr reports whether r allows address a on port. Name rules never
// match addresses.
func (r Rule) MatchAddr(a netip.Addr, port int) bool {
	return r.kind == kindPrefix && r.matchPort(port) && r.prefix.Contains(a.Unmap())
}
