package egress

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseRule(t *testing.T) {
	tests := []struct{ in, want string }{
		{"example.com", "example.com"},
		{"  Example.COM.  ", "example.com"},
		{"example.com:8443", "example.com:8443"},
		{"*.example.com", "*.example.com"},
		{"*.Example.com.:443", "*.example.com:443"},
		{"bücher.example", "xn--bcher-kva.example"},
		{"*.bücher.example", "*.xn--bcher-kva.example"},
		{"127.0.0.1", "127.0.0.1"},
		{"127.0.0.1:8080", "127.0.0.1:8080"},
		{"::1", "::1"},
		{"[::1]", "::1"},
		{"[::1]:8080", "[::1]:8080"},
		{"0:0:0:0:0:0:0:1", "::1"},
		{"[::ffff:10.0.0.1]:80", "10.0.0.1:80"},
		{"10.0.0.0/8", "10.0.0.0/8"},
		{"10.0.0.0/8:443", "10.0.0.0/8:443"},
		{"10.1.2.3/32", "10.1.2.3"},
		{"fd00::/8", "fd00::/8"},
		{"[fd00::/8]:443", "[fd00::/8]:443"},
		{"::ffff:10.0.0.0/104", "10.0.0.0/8"},
		{"localhost", "localhost"},
	}
	for _, tt := range tests {
		r, err := ParseRule(tt.in)
		if err != nil {
			t.Errorf("ParseRule(%q): %v", tt.in, err)
			continue
		}
		if got := r.String(); got != tt.want {
			t.Errorf("ParseRule(%q).String() = %q, want %q", tt.in, got, tt.want)
		}
		// The canonical form parses back to the same rule.
		r2, err := ParseRule(r.String())
		if err != nil || r2 != r {
			t.Errorf("ParseRule(%q) did not round-trip: %v %v", r.String(), r2, err)
		}
	}
}

func TestParseRuleInvalid(t *testing.T) {
	for _, in := range []string{
		"",
		"   ",
		"*",
		"*.",
		"*.*.example.com",
		"foo.*.example.com",
		"*example.com",
		"example.com:",
		"example.com:0",
		"example.com:65536",
		"example.com:080",
		"example.com:http",
		"example.com:-1",
		"example..com",
		"ex ample.com",
		"http://example.com",
		"example.com/path",
		"user@example.com",
		"[::1",
		"[::1]x",
		"[::1]:",
		"[127.0.0.1]",
		"[10.0.0.0/8]:443",
		"fe80::1%eth0",
		"10.0.0.1/8",
		"10.0.0.0/33",
		"::ffff:0:0/90",
		"2130706433",
		"0x7f000001",
		"127.1",
		"0177.0.0.1",
		"*.127.0.0.1",
		"1.2.3.4.5",
		"example.123",
		"::1:80:x",
	} {
		r, err := ParseRule(in)
		if err == nil {
			t.Errorf("ParseRule(%q) = %q, want error", in, r)
			continue
		}
		if !strings.Contains(err.Error(), "accepted forms") {
			t.Errorf("ParseRule(%q) error does not list accepted forms: %v", in, err)
		}
	}
}

func TestRuleMatch(t *testing.T) {
	tests := []struct {
		rule, host string
		port       int
		want       bool
	}{
		{"example.com", "example.com", 443, true},
		{"example.com", "example.com", 80, true},
		{"example.com", "example.com", 8080, false},
		{"example.com", "EXAMPLE.com.", 443, true},
		{"example.com", "www.example.com", 443, false},
		{"example.com", "example.com.evil.test", 443, false},
		{"example.com:8080", "example.com", 8080, true},
		{"example.com:8080", "example.com", 443, false},
		{"*.example.com", "a.example.com", 443, true},
		{"*.example.com", "a.b.example.com", 443, true},
		{"*.example.com", "example.com", 443, false},
		{"*.example.com", "aexample.com", 443, false},
		{"*.example.com", "a.example.com.", 443, true},
		{"*.example.com:8443", "a.example.com", 8443, true},
		{"*.example.com:8443", "a.example.com", 443, false},
		{"bücher.example", "xn--bcher-kva.example", 443, true},
		{"xn--bcher-kva.example", "BÜCHER.example", 443, true},
		{"*.bücher.example", "www.xn--bcher-kva.example", 443, true},
		{"127.0.0.1", "127.0.0.1", 443, false}, // IP rules never match names
	}
	for _, tt := range tests {
		r, err := ParseRule(tt.rule)
		if err != nil {
			t.Fatal(err)
		}
		host, _, _, err := NormalizeHost(tt.host)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.MatchName(host, tt.port); got != tt.want {
			t.Errorf("%q.MatchName(%q, %d) = %v, want %v", tt.rule, tt.host, tt.port, got, tt.want)
		}
	}

	addrTests := []struct {
		rule, addr string
		port       int
		want       bool
	}{
		{"127.0.0.1", "127.0.0.1", 80, true},
		{"127.0.0.1", "127.0.0.1", 8080, false},
		{"127.0.0.1:8080", "127.0.0.1", 8080, true},
		{"127.0.0.1", "::ffff:127.0.0.1", 443, true},
		{"10.0.0.0/8", "10.9.8.7", 443, true},
		{"10.0.0.0/8", "11.0.0.1", 443, false},
		{"10.0.0.0/8:5432", "10.0.0.1", 5432, true},
		{"[fd00::/8]:443", "fd12::1", 443, true},
		{"[fd00::/8]:443", "fd12::1", 80, false},
		{"::1", "::1", 443, true},
		{"example.com", "127.0.0.1", 443, false},
	}
	for _, tt := range addrTests {
		r, err := ParseRule(tt.rule)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.MatchAddr(netip.MustParseAddr(tt.addr), tt.port); got != tt.want {
			t.Errorf("%q.MatchAddr(%s, %d) = %v, want %v", tt.rule, tt.addr, tt.port, got, tt.want)
		}
	}
}

func TestNewPolicy(t *testing.T) {
	p, err := NewPolicy([]string{"Example.com", "example.com.", "*.Deps.test:8443", "10.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(p.Rules(), " ")
	if got != "example.com *.deps.test:8443 10.0.0.0/8" {
		t.Errorf("Rules() = %q", got)
	}
	_, err = NewPolicy([]string{"ok.example", "bad..example", "also bad"})
	if err == nil || !strings.Contains(err.Error(), "bad..example") || !strings.Contains(err.Error(), "also bad") {
		t.Errorf("NewPolicy should report every invalid rule, got %v", err)
	}
	var nilPolicy *Policy
	if nilPolicy.Rules() != nil || nilPolicy.Decide("example.com", 443, []netip.Addr{netip.MustParseAddr("8.8.8.8")}).Allowed {
		t.Error("a nil policy must deny everything")
	}
}
