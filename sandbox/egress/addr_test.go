package egress

import (
	"net/netip"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		in   string
		want Class
	}{
		{"8.8.8.8", ClassPublic},
		{"1.1.1.1", ClassPublic},
		{"2606:4700::1111", ClassPublic},
		{"127.0.0.1", ClassLoopback},
		{"127.255.255.254", ClassLoopback},
		{"::1", ClassLoopback},
		{"10.1.2.3", ClassPrivate},
		{"172.16.0.1", ClassPrivate},
		{"172.31.255.255", ClassPrivate},
		{"172.32.0.1", ClassPublic},
		{"192.168.1.1", ClassPrivate},
		{"fd00::1", ClassPrivate},
		{"fc00::1", ClassPrivate},
		{"fec0::1", ClassPrivate},
		{"169.254.169.254", ClassLinkLocal},
		{"169.254.0.1", ClassLinkLocal},
		{"fe80::1", ClassLinkLocal},
		{"100.64.0.1", ClassCGNAT},
		{"100.127.255.255", ClassCGNAT},
		{"100.128.0.1", ClassPublic},
		{"224.0.0.1", ClassMulticast},
		{"ff02::1", ClassMulticast},
		{"0.0.0.0", ClassUnspecified},
		{"::", ClassUnspecified},
		{"0.1.2.3", ClassReserved},
		{"192.0.0.8", ClassReserved},
		{"192.0.2.1", ClassDocumentation},
		{"198.51.100.1", ClassDocumentation},
		{"203.0.113.1", ClassDocumentation},
		{"198.18.0.1", ClassReserved},
		{"198.19.255.255", ClassReserved},
		{"192.88.99.1", ClassReserved},
		{"240.0.0.1", ClassReserved},
		{"255.255.255.255", ClassBroadcast},
		{"2001:db8::1", ClassDocumentation},
		{"3fff::1", ClassDocumentation},
		{"2001::1", ClassReserved}, // Teredo
		{"100::1", ClassReserved},
		{"64:ff9b:1::1", ClassReserved},
		{"4000::1", ClassReserved}, // outside 2000::/3
		// Embedded IPv4 takes the class of the IPv4 address.
		{"::ffff:127.0.0.1", ClassLoopback},
		{"::ffff:7f00:1", ClassLoopback},
		{"::127.0.0.1", ClassLoopback},
		{"::ffff:169.254.169.254", ClassLinkLocal},
		{"::10.0.0.1", ClassPrivate},
		{"64:ff9b::7f00:1", ClassLoopback},
		{"64:ff9b::808:808", ClassPublic},
		{"2002:7f00:1::", ClassLoopback},
		{"2002:a9fe:a9fe::1", ClassLinkLocal},
		{"2002:808:808::1", ClassPublic},
		{"::ffff:8.8.8.8", ClassPublic},
		{"fe80::1%eth0", ClassLinkLocal},
	}
	for _, tt := range tests {
		a := netip.MustParseAddr(tt.in)
		if got := Classify(a); got != tt.want {
			t.Errorf("Classify(%s) = %s, want %s", tt.in, got, tt.want)
		}
		if IsSpecial(tt.want) != (tt.want != ClassPublic) {
			t.Errorf("IsSpecial(%s) wrong", tt.want)
		}
	}
	if Classify(netip.Addr{}) != ClassReserved {
		t.Error("the zero Addr must not classify as public")
	}
}

// TestClassifyOddSpellings runs every spelling a step might use to sneak a
// special address past a name rule through NormalizeHost and Classify.
func TestClassifyOddSpellings(t *testing.T) {
	tests := []struct {
		in   string
		want Class
	}{
		{"2130706433", ClassLoopback},
		{"0x7f000001", ClassLoopback},
		{"0177.0.0.1", ClassLoopback},
		{"127.1", ClassLoopback},
		{"127.0.1", ClassLoopback},
		{"[::ffff:127.0.0.1]", ClassLoopback},
		{"::ffff:7f00:1", ClassLoopback},
		{"[::127.0.0.1]", ClassLoopback},
		{"[::1]", ClassLoopback},
		{"169.254.169.254", ClassLinkLocal},
		{"0xa9fea9fe", ClassLinkLocal},
		{"2852039166", ClassLinkLocal},
		{"100.64.0.1", ClassCGNAT},
		{"fd00::1", ClassPrivate},
		{"fe80::1", ClassLinkLocal},
		{"0.0.0.0", ClassUnspecified},
		{"0", ClassUnspecified},
		{"::", ClassUnspecified},
		{"10.1", ClassPrivate},
		{"１２７.０.０.１", ClassLoopback},
	}
	for _, tt := range tests {
		_, ip, isIP, err := NormalizeHost(tt.in)
		if err != nil || !isIP {
			t.Errorf("NormalizeHost(%q) = %v, %v, %v; want an IP", tt.in, ip, isIP, err)
			continue
		}
		if got := Classify(ip); got != tt.want {
			t.Errorf("Classify(NormalizeHost(%q) = %s) = %s, want %s", tt.in, ip, got, tt.want)
		}
	}
}

func TestClassString(t *testing.T) {
	if ClassLinkLocal.String() != "link-local" || Class(200).String() != "unknown" {
		t.Error("Class.String")
	}
}
