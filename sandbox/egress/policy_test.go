package egress

import (
	"net/netip"
	"strings"
	"testing"
)

func addrs(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		out[i] = netip.MustParseAddr(a)
	}
	return out
}

func TestDecide(t *testing.T) {
	pol, err := NewPolicy([]string{
		"deps.test",
		"*.mirror.test",
		"local.test:8080",
		"127.0.0.1:8080",
		"10.1.0.0/16:443",
		"[fd00::/8]:443",
		"203.0.113.7",
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		host    string
		port    int
		addrs   []netip.Addr
		allowed bool
		rule    string
		addr    string
		special bool
		hint    string
		reason  string
	}{
		{name: "name to public", host: "deps.test", port: 443, addrs: addrs("8.8.8.8", "2606:4700::1"), allowed: true, rule: "deps.test", addr: "8.8.8.8"},
		{name: "name, case and dot", host: "DEPS.test.", port: 80, addrs: addrs("8.8.8.8"), allowed: true, rule: "deps.test"},
		{name: "no rule", host: "evil.test", port: 443, addrs: addrs("8.8.8.8"), hint: "evil.test:443", reason: "no rule matches"},
		{name: "wrong port", host: "deps.test", port: 8443, addrs: addrs("8.8.8.8"), hint: "deps.test:8443"},
		{name: "wildcard", host: "a.b.mirror.test", port: 443, addrs: addrs("8.8.4.4"), allowed: true, rule: "*.mirror.test"},
		{name: "wildcard not apex", host: "mirror.test", port: 443, addrs: addrs("8.8.4.4")},
		{name: "name to loopback denied", host: "deps.test", port: 443, addrs: addrs("127.0.0.1"), special: true, hint: "127.0.0.1:443", reason: "loopback"},
		{name: "name to mapped loopback denied", host: "deps.test", port: 443, addrs: addrs("::ffff:127.0.0.1"), special: true, reason: "loopback"},
		{name: "name to metadata denied", host: "deps.test", port: 80, addrs: addrs("169.254.169.254"), special: true, reason: "link-local"},
		{name: "public plus private denied", host: "deps.test", port: 443, addrs: addrs("8.8.8.8", "10.0.0.1"), special: true, reason: "private"},
		{name: "name to loopback with IP rule", host: "local.test", port: 8080, addrs: addrs("127.0.0.1"), allowed: true, rule: "local.test:8080", addr: "127.0.0.1"},
		{name: "IP rule needs the port", host: "deps.test", port: 443, addrs: addrs("127.0.0.1"), special: true},
		{name: "name to CIDR-covered private", host: "deps.test", port: 443, addrs: addrs("10.1.2.3", "8.8.8.8"), allowed: true, rule: "deps.test", addr: "10.1.2.3"},
		{name: "IP rule alone does not allow a name", host: "other.test", port: 8080, addrs: addrs("127.0.0.1"), reason: "no rule matches"},
		{name: "no addresses", host: "deps.test", port: 443, addrs: nil, reason: "no addresses"},
		{name: "IP literal with rule", host: "127.0.0.1", port: 8080, allowed: true, rule: "127.0.0.1:8080", addr: "127.0.0.1"},
		{name: "odd spelling with rule", host: "2130706433", port: 8080, allowed: true, rule: "127.0.0.1:8080", addr: "127.0.0.1"},
		{name: "IP literal special without rule", host: "0x7f000001", port: 80, special: true, hint: "127.0.0.1:80"},
		{name: "IP literal public needs IP rule", host: "8.8.8.8", port: 443, hint: "8.8.8.8:443", reason: "IP/CIDR"},
		{name: "IP literal public with rule", host: "203.0.113.7", port: 443, allowed: true, rule: "203.0.113.7"},
		{name: "IPv6 CIDR", host: "[fd12::1]", port: 443, allowed: true, rule: "[fd00::/8]:443"},
		{name: "mapped IPv6 literal", host: "[::ffff:127.0.0.1]", port: 8080, allowed: true, rule: "127.0.0.1:8080"},
		{name: "compat IPv6 literal is not 127.0.0.1", host: "[::127.0.0.1]", port: 8080, special: true},
		{name: "name rule never matches IP", host: "127.0.0.1", port: 443, special: true},
		{name: "invalid host", host: "a b", port: 443, reason: "invalid host"},
		{name: "invalid port", host: "deps.test", port: 0, reason: "invalid port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := pol.Decide(tt.host, tt.port, tt.addrs)
			if d.Allowed != tt.allowed {
				t.Fatalf("Allowed = %v, want %v (%+v)", d.Allowed, tt.allowed, d)
			}
			if tt.rule != "" && d.Rule != tt.rule {
				t.Errorf("Rule = %q, want %q", d.Rule, tt.rule)
			}
			if tt.addr != "" && d.Addr.String() != tt.addr {
				t.Errorf("Addr = %s, want %s", d.Addr, tt.addr)
			}
			if d.Special != tt.special {
				t.Errorf("Special = %v, want %v (%s)", d.Special, tt.special, d.Reason)
			}
			if tt.hint != "" && d.Hint != tt.hint {
				t.Errorf("Hint = %q, want %q", d.Hint, tt.hint)
			}
			if !strings.Contains(d.Reason, tt.reason) {
				t.Errorf("Reason = %q, want it to mention %q", d.Reason, tt.reason)
			}
			if d.Allowed && (len(d.Addrs) == 0 || d.Addrs[0] != d.Addr) {
				t.Errorf("allowed decision must list Addr first in Addrs: %+v", d)
			}
			if !d.Allowed && d.Addr.IsValid() {
				t.Errorf("denied decision carries an address: %+v", d)
			}
		})
	}
}

func TestDecideAudit(t *testing.T) {
	pol, err := NewPolicy([]string{"127.0.0.1:8080"})
	if err != nil {
		t.Fatal(err)
	}
	// Unlisted name to a public address: allowed by audit, hint recorded.
	d := pol.decide("new.test", 443, addrs("8.8.8.8"), true)
	if !d.Allowed || !d.Audit || d.Hint != "new.test:443" || d.Rule != "" {
		t.Errorf("audit public name: %+v", d)
	}
	// Unlisted public IP literal.
	d = pol.decide("8.8.8.8", 443, nil, true)
	if !d.Allowed || !d.Audit || d.Hint != "8.8.8.8:443" {
		t.Errorf("audit public IP: %+v", d)
	}
	// Special addresses stay denied in audit mode.
	for _, c := range []struct {
		host  string
		addrs []netip.Addr
	}{
		{"new.test", addrs("127.0.0.1")},
		{"new.test", addrs("8.8.8.8", "169.254.169.254")},
		{"10.0.0.1", nil},
		{"2130706433", nil},
	} {
		if d := pol.decide(c.host, 443, c.addrs, true); d.Allowed || !d.Special {
			t.Errorf("audit %s %v: %+v, want special denial", c.host, c.addrs, d)
		}
	}
	// A special address covered by an IP rule is fine in audit mode too.
	if d := pol.decide("new.test", 8080, addrs("127.0.0.1"), true); !d.Allowed || !d.Audit {
		t.Errorf("audit with IP rule: %+v", d)
	}
	// Invalid hosts stay denied.
	if d := pol.decide("a b", 443, nil, true); d.Allowed {
		t.Errorf("audit invalid host: %+v", d)
	}
}

func TestNeedsResolve(t *testing.T) {
	pol, _ := NewPolicy([]string{"deps.test", "10.0.0.0/8"})
	if !pol.NeedsResolve("Deps.Test.", 443) || pol.NeedsResolve("deps.test", 22) || pol.NeedsResolve("evil.test", 443) || pol.NeedsResolve("10.0.0.1", 443) {
		t.Error("NeedsResolve")
	}
}
