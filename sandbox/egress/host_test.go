package egress

import (
	"net/netip"
	"strings"
	"testing"
)

func TestNormalizeHost(t *testing.T) {
	tests := []struct {
		in   string
		host string
		isIP bool
	}{
		{"example.com", "example.com", false},
		{"Example.COM", "example.com", false},
		{"example.com.", "example.com", false},
		{"bücher.example", "xn--bcher-kva.example", false},
		{"BÜCHER.example.", "xn--bcher-kva.example", false},
		{"xn--bcher-kva.example", "xn--bcher-kva.example", false},
		{"ｅｘａｍｐｌｅ.com", "example.com", false}, // full-width letters
		{"example。com", "example.com", false}, // ideographic full stop
		{"r3---sn-abc.example", "r3---sn-abc.example", false},
		{"_dmarc.example", "_dmarc.example", false},
		{"localhost", "localhost", false},
		{"1.2.3.4.example", "1.2.3.4.example", false},
		{"0x.example", "0x.example", false},

		// Every IPv4 spelling inet_aton and browsers accept.
		{"127.0.0.1", "127.0.0.1", true},
		{"2130706433", "127.0.0.1", true},
		{"0x7f000001", "127.0.0.1", true},
		{"0X7F000001", "127.0.0.1", true},
		{"0177.0.0.1", "127.0.0.1", true},
		{"0177.0000.0000.0001", "127.0.0.1", true},
		{"127.1", "127.0.0.1", true},
		{"127.0.1", "127.0.0.1", true},
		{"0x7f.1", "127.0.0.1", true},
		{"127.0.0.1.", "127.0.0.1", true},
		{"１２７.０.０.１", "127.0.0.1", true}, // full-width digits
		{"017700000001", "127.0.0.1", true},
		{"0", "0.0.0.0", true},
		{"0x", "0.0.0.0", true},
		{"169.254.169.254", "169.254.169.254", true},
		{"2852039166", "169.254.169.254", true},
		{"4294967295", "255.255.255.255", true},

		// IPv6, bracketed or bare; mapped forms unmap.
		{"[::1]", "::1", true},
		{"::1", "::1", true},
		{"[::ffff:127.0.0.1]", "127.0.0.1", true},
		{"::ffff:7f00:1", "127.0.0.1", true},
		{"[::127.0.0.1]", "::7f00:1", true},
		{"[FD00::1]", "fd00::1", true},
	}
	for _, tt := range tests {
		host, ip, isIP, err := NormalizeHost(tt.in)
		if err != nil {
			t.Errorf("NormalizeHost(%q): %v", tt.in, err)
			continue
		}
		if host != tt.host || isIP != tt.isIP {
			t.Errorf("NormalizeHost(%q) = %q, %v; want %q, %v", tt.in, host, isIP, tt.host, tt.isIP)
		}
		if isIP && ip.String() != host {
			t.Errorf("NormalizeHost(%q): ip %s does not match host %q", tt.in, ip, host)
		}
	}
}

func TestNormalizeHostInvalid(t *testing.T) {
	for _, in := range []string{
		"",
		".",
		"example..com",
		"example.com..",
		"[::1",
		"[127.0.0.1]",
		"[fe80::1%eth0]",
		"fe80::1%25eth0",
		"1.2.3.4.5",
		"256.0.0.1",
		"4294967296",
		"0x100000000",
		"127.0.0.08",
		"example.123",
		"foo.0x",
		"a b.example",
		"a%2f.example",
		"a/b.example",
		"user@example.com",
		"example.com:80",
		"xn--zz.example", // invalid punycode
		strings.Repeat("a", 64) + ".example",
		strings.Repeat("a.", 127) + "example",
		strings.Repeat("x", 2000),
		"ex\x00ample.com",
	} {
		if h, _, _, err := NormalizeHost(in); err == nil {
			t.Errorf("NormalizeHost(%q) = %q, want error", in, h)
		}
	}
}

func TestParseIPv4Loose(t *testing.T) {
	for in, want := range map[string]string{
		"1":           "0.0.0.1",
		"1.2":         "1.0.0.2",
		"1.2.3":       "1.2.0.3",
		"1.2.65535":   "1.2.255.255",
		"1.16777215":  "1.255.255.255",
		"0xff.0xff.0": "255.255.0.0",
	} {
		a, ok := parseIPv4Loose(in)
		if !ok || a != netip.MustParseAddr(want) {
			t.Errorf("parseIPv4Loose(%q) = %v, %v; want %s", in, a, ok, want)
		}
	}
	for _, in := range []string{"1.2.65536", "1.16777216", "256.1", "1..2", ".1", "1.2.3.4.5", "08", "0x1g"} {
		if a, ok := parseIPv4Loose(in); ok {
			t.Errorf("parseIPv4Loose(%q) = %v, want failure", in, a)
		}
	}
}
