package egress

import "net/netip"

// Class is the kind of destination an IP address is. Anything but
// ClassPublic is "special": a name is never allowed to reach it, because
// that is how DNS rebinding and metadata-service attacks turn an innocent
// allowlist entry into access to the host, the cloud metadata endpoint or
// the internal network.
type Class uint8

// Address classes. The zero value is ClassPublic only for readability of
// tables; Classify is the only way to obtain a meaningful Class.
const (
	ClassPublic        Class = iota
	ClassLoopback            // 127.0.0.0/8, ::1
	ClassPrivate             // RFC 1918, fc00::/7 (ULA), fec0::/10 (old site-local)
	ClassLinkLocal           // 169.254.0.0/16 (incl. 169.254.169.254), fe80::/10
	ClassCGNAT               // 100.64.0.0/10 shared address space
	ClassMulticast           // 224.0.0.0/4, ff00::/8
	ClassUnspecified         // 0.0.0.0, ::
	ClassBroadcast           // 255.255.255.255
	ClassDocumentation       // 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20
	ClassReserved            // every other special-purpose or unallocated range
)

var classNames = [...]string{
	ClassPublic:        "public",
	ClassLoopback:      "loopback",
	ClassPrivate:       "private",
	ClassLinkLocal:     "link-local",
	ClassCGNAT:         "shared (CGNAT)",
	ClassMulticast:     "multicast",
	ClassUnspecified:   "unspecified",
	ClassBroadcast:     "broadcast",
	ClassDocumentation: "documentation",
	ClassReserved:      "reserved",
}

func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return "unknown"
}

// IsSpecial reports whether c is anything other than public unicast.
func IsSpecial(c Class) bool { return c != ClassPublic }

type v4Range struct {
	base  uint32
	bits  uint8
	class Class
}

// v4Special lists special IPv4 ranges, most specific first.
var v4Special = []v4Range{
	{0x00000000, 32, ClassUnspecified},   // 0.0.0.0
	{0x00000000, 8, ClassReserved},       // 0.0.0.0/8 "this network"; Linux routes it to the host
	{0x0a000000, 8, ClassPrivate},        // 10.0.0.0/8
	{0x64400000, 10, ClassCGNAT},         // 100.64.0.0/10
	{0x7f000000, 8, ClassLoopback},       // 127.0.0.0/8
	{0xa9fe0000, 16, ClassLinkLocal},     // 169.254.0.0/16, cloud metadata lives here
	{0xac100000, 12, ClassPrivate},       // 172.16.0.0/12
	{0xc0000000, 24, ClassReserved},      // 192.0.0.0/24 IETF protocol assignments
	{0xc0000200, 24, ClassDocumentation}, // 192.0.2.0/24
	{0xc0586300, 24, ClassReserved},      // 192.88.99.0/24 deprecated 6to4 relay anycast
	{0xc0a80000, 16, ClassPrivate},       // 192.168.0.0/16
	{0xc6120000, 15, ClassReserved},      // 198.18.0.0/15 benchmarking
	{0xc6336400, 24, ClassDocumentation}, // 198.51.100.0/24
	{0xcb007100, 24, ClassDocumentation}, // 203.0.113.0/24
	{0xe0000000, 4, ClassMulticast},      // 224.0.0.0/4
	{0xffffffff, 32, ClassBroadcast},     // 255.255.255.255
	{0xf0000000, 4, ClassReserved},       // 240.0.0.0/4
}

type v6Range struct {
	prefix netip.Prefix
	class  Class
}

// v6Special lists special IPv6 ranges, most specific first. Ranges that
// embed an IPv4 address are handled in Classify before this table.
var v6Special = []v6Range{
	{netip.MustParsePrefix("ff00::/8"), ClassMulticast},
	{netip.MustParsePrefix("fe80::/10"), ClassLinkLocal},
	{netip.MustParsePrefix("fec0::/10"), ClassPrivate},
	{netip.MustParsePrefix("fc00::/7"), ClassPrivate},
	{netip.MustParsePrefix("100::/64"), ClassReserved},       // discard-only
	{netip.MustParsePrefix("64:ff9b:1::/48"), ClassReserved}, // local-use NAT64: may translate to internal IPv4
	{netip.MustParsePrefix("2001:db8::/32"), ClassDocumentation},
	{netip.MustParsePrefix("2001::/23"), ClassReserved}, // IETF protocol assignments, incl. Teredo 2001::/32
	{netip.MustParsePrefix("3fff::/20"), ClassDocumentation},
	{netip.MustParsePrefix("5f00::/16"), ClassReserved}, // SRv6 SIDs
}

var (
	v6Compat = netip.MustParsePrefix("::/96")
	v6NAT64  = netip.MustParsePrefix("64:ff9b::/96")
	v6To4    = netip.MustParsePrefix("2002::/16")
	v6Global = netip.MustParsePrefix("2000::/3")
)

// Classify returns the class of a. Addresses that carry an IPv4 address —
// IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), well-known
// NAT64 (64:ff9b::/96) and 6to4 (2002::/16) — take the class of the IPv4
// address they lead to, since that is where packets end up. IPv6 outside
// the global unicast block 2000::/3 is reserved. An invalid address is
// reserved, so that a zero value can never pass as public.
func Classify(a netip.Addr) Class {
	if !a.IsValid() {
		return ClassReserved
	}
	a = a.WithZone("")
	if a.Is4In6() {
		a = a.Unmap()
	}
	if a.Is4() {
		return classify4(a.As4())
	}
	b := a.As16()
	switch {
	case a == netip.IPv6Unspecified():
		return ClassUnspecified
	case a == netip.IPv6Loopback():
		return ClassLoopback
	case v6Compat.Contains(a), v6NAT64.Contains(a):
		return classify4([4]byte{b[12], b[13], b[14], b[15]})
	case v6To4.Contains(a):
		return classify4([4]byte{b[2], b[3], b[4], b[5]})
	}
	for _, r := range v6Special {
		if r.prefix.Contains(a) {
			return r.class
		}
	}
	if !v6Global.Contains(a) {
		return ClassReserved
	}
	return ClassPublic
}

func classify4(b [4]byte) Class {
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	for _, r := range v4Special {
		mask := ^uint32(0) << (32 - r.bits)
		if v&mask == r.base {
			return r.class
		}
	}
	return ClassPublic
}
