package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// maxHostInput bounds the work done on a host before any parsing: nothing
// legitimate is longer, and IDNA mapping of huge inputs is wasted effort.
const maxHostInput = 1024

// idnaProfile maps names the way a resolver-facing client does (UTS #46
// lookup mapping: case folding, width folding, NFC, ideographic full stops
// to dots) and validates A-labels. Hyphen placement is not checked because
// real names such as "r3---sn-abc.example" violate that rule, and STD3 is
// relaxed so that '_' survives; the ASCII check below is the real gate.
var idnaProfile = idna.New(
	idna.MapForLookup(),
	idna.BidiRule(),
	idna.CheckHyphens(false),
	idna.StrictDomainName(false),
	idna.Transitional(false),
)

// NormalizeHost canonicalises a request host (no port) so that the policy
// compares like with like. It returns either a name (lower case, ASCII,
// punycode, no trailing dot) with isIP false, or an IP address with isIP
// true and host set to the address's canonical text.
//
// IP literals are recognised in every spelling that browsers and
// inet_aton(3) accept — 2130706433, 0x7f000001, 0177.0.0.1, 127.1,
// [::ffff:127.0.0.1], full-width digits — because a name rule must never
// match something the OS will treat as an address. A name whose last label
// is numeric but which is not a valid IPv4 spelling is rejected rather than
// treated as a name, as the WHATWG URL standard does. IPv4-mapped IPv6
// addresses are returned as the IPv4 address they reach. Zones are rejected:
// they select an interface, which has no meaning for egress.
func NormalizeHost(s string) (host string, ip netip.Addr, isIP bool, err error) {
	if s == "" {
		return "", netip.Addr{}, false, errors.New("empty host")
	}
	if len(s) > maxHostInput {
		return "", netip.Addr{}, false, errors.New("host too long")
	}
	if s[0] == '[' {
		if s[len(s)-1] != ']' {
			return "", netip.Addr{}, false, fmt.Errorf("host %q: unterminated IPv6 literal", s)
		}
		a, err := parseIPv6(s[1 : len(s)-1])
		if err != nil {
			return "", netip.Addr{}, false, fmt.Errorf("host %q: %w", s, err)
		}
		return a.String(), a, true, nil
	}
	if strings.IndexByte(s, ':') >= 0 {
		a, err := parseIPv6(s)
		if err != nil {
			return "", netip.Addr{}, false, fmt.Errorf("host %q: %w", s, err)
		}
		return a.String(), a, true, nil
	}

	name, err := toASCIIName(s)
	if err != nil {
		return "", netip.Addr{}, false, fmt.Errorf("host %q: %w", s, err)
	}
	if endsInNumber(name) {
		a, ok := parseIPv4Loose(name)
		if !ok {
			return "", netip.Addr{}, false, fmt.Errorf("host %q: looks like an IPv4 address but is not a valid one", s)
		}
		return a.String(), a, true, nil
	}
	if err := checkName(name); err != nil {
		return "", netip.Addr{}, false, fmt.Errorf("host %q: %w", s, err)
	}
	return name, netip.Addr{}, false, nil
}

// parseIPv6 parses an IPv6 literal without brackets. IPv4-mapped forms are
// unmapped because a dual-stack socket connecting to ::ffff:a.b.c.d reaches
// a.b.c.d.
func parseIPv6(s string) (netip.Addr, error) {
	if strings.IndexByte(s, '%') >= 0 {
		return netip.Addr{}, errors.New("IPv6 zones are not allowed")
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is6() {
		return netip.Addr{}, errors.New("invalid IPv6 literal")
	}
	return a.Unmap(), nil
}

// toASCIIName lower-cases, strips one trailing dot and applies IDNA. Plain
// lower-case ASCII names skip the IDNA tables (the common case) unless they
// contain an A-label, which IDNA must validate.
func toASCIIName(s string) (string, error) {
	if strings.HasSuffix(s, ".") {
		s = s[:len(s)-1]
	}
	if s == "" || strings.HasSuffix(s, ".") {
		return "", errors.New("empty label")
	}
	if !utf8.ValidString(s) {
		// IDNA would map invalid bytes to U+FFFD and punycode them into a
		// name nobody wrote.
		return "", errors.New("invalid UTF-8")
	}
	if plainASCII(s) {
		s = strings.ToLower(s)
		if !strings.Contains(s, "xn--") {
			return s, nil
		}
	}
	out, err := idnaProfile.ToASCII(s)
	if err != nil {
		return "", fmt.Errorf("invalid internationalised name: %w", err)
	}
	// The mapping can produce a trailing dot (e.g. from U+3002).
	out = strings.TrimSuffix(out, ".")
	if out == "" {
		return "", errors.New("empty label")
	}
	return out, nil
}

// plainASCII reports whether s holds only characters that need no IDNA
// mapping other than ASCII case folding.
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '.', c == '_':
		default:
			return false
		}
	}
	return true
}

// checkName enforces DNS label syntax on an already lower-cased ASCII name.
// Anything else ('%', '/', '@', spaces, control bytes) is rejected so that
// no downstream parser can read the name differently from us.
func checkName(s string) error {
	if len(s) > 253 {
		return errors.New("name longer than 253 characters")
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" {
			return errors.New("empty label")
		}
		if len(label) > 63 {
			return errors.New("label longer than 63 characters")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("invalid character %q in name", c)
			}
		}
	}
	return nil
}

// endsInNumber implements the WHATWG "ends in a number" test: if the last
// label is decimal digits or a 0x-prefixed hex number, the host must be an
// IPv4 address.
func endsInNumber(s string) bool {
	last := s
	if i := strings.LastIndexByte(s, '.'); i >= 0 {
		last = s[i+1:]
	}
	if last == "" {
		return false
	}
	if allDigits(last) {
		return true
	}
	_, ok := parseIPv4Number(last)
	return ok
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// parseIPv4Loose parses the inet_aton / WHATWG IPv4 grammar: one to four
// parts, each decimal, octal (leading 0) or hex (0x); the last part fills
// the remaining bytes.
func parseIPv4Loose(s string) (netip.Addr, bool) {
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	var nums [4]uint64
	for i, p := range parts {
		n, ok := parseIPv4Number(p)
		if !ok {
			return netip.Addr{}, false
		}
		nums[i] = n
	}
	last := len(parts) - 1
	for i := range last {
		if nums[i] > 255 {
			return netip.Addr{}, false
		}
	}
	if nums[last] >= 1<<(8*(5-len(parts))) {
		return netip.Addr{}, false
	}
	v := nums[last]
	for i := range last {
		v |= nums[i] << (8 * (3 - i))
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

// parseIPv4Number parses one part of a loose IPv4 address. Values are capped
// well above 2^32 so that overflow cannot wrap a huge number into range.
func parseIPv4Number(s string) (uint64, bool) {
	if s == "" {
		return 0, false
	}
	base := uint64(10)
	switch {
	case len(s) >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'):
		base, s = 16, s[2:]
		if s == "" {
			return 0, true // "0x" is zero, per WHATWG
		}
	case len(s) >= 2 && s[0] == '0':
		base, s = 8, s[1:]
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		var d uint64
		c := s[i]
		switch {
		case '0' <= c && c <= '9':
			d = uint64(c - '0')
		case 'a' <= c && c <= 'f':
			d = uint64(c-'a') + 10
		case 'A' <= c && c <= 'F':
			d = uint64(c-'A') + 10
		default:
			return 0, false
		}
		if d >= base {
			return 0, false
		}
		v = v*base + d
		if v > 1<<40 {
			return 0, false
		}
	}
	return v, true
}
