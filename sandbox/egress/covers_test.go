package egress

import "testing"

func TestCovers(t *testing.T) {
	for _, tc := range []struct {
		max, rule string
		want      bool
	}{
		{"example.org", "example.org", true},
		{"example.org", "example.org:443", true},
		{"example.org", "example.org:8443", false}, // no port means 80 and 443 only
		{"example.org:443", "example.org", false},  // 80 is not covered
		{"example.org:8443", "example.org:8443", true},
		{"example.org", "www.example.org", false},
		{"*.example.org", "www.example.org", true},
		{"*.example.org", "a.b.example.org:443", true},
		{"*.example.org", "example.org", false}, // a wildcard is one or more labels below
		{"*.example.org", "*.example.org", true},
		{"*.example.org", "*.b.example.org", true},
		{"*.b.example.org", "*.example.org", false},
		{"*.example.org", "*.org", false},
		{"www.example.org", "*.example.org", false}, // a name never covers a wildcard
		{"*.example.org:80", "*.example.org", false},
		{"*.xample.org", "www.example.org", false}, // label boundaries
		{"10.0.0.0/8", "10.1.2.3", true},
		{"10.0.0.0/8", "10.1.0.0/16", true},
		{"10.0.0.0/16", "10.0.0.0/8", false},
		{"10.0.0.0/8:8080", "10.0.0.5:8080", true},
		{"10.0.0.0/8:8080", "10.0.0.5", false},
		{"10.0.0.0/8", "11.0.0.1", false},
		{"fd00::/8", "fd12::1", true},
		{"[fd00::/8]:8080", "[fd12::1]:8080", true},
		{"[fd00::/8]:8080", "[fd12::/16]:8080", true},
		{"fd00::/8", "fe80::1", false},
		{"127.0.0.1:5000", "127.0.0.1:5000", true},
		{"example.org", "10.0.0.1", false}, // names never cover addresses
		{"10.0.0.0/8", "example.org", false},
	} {
		m, err := ParseRule(tc.max)
		if err != nil {
			t.Fatal(err)
		}
		r, err := ParseRule(tc.rule)
		if err != nil {
			t.Fatal(err)
		}
		if got := Covers(m, r); got != tc.want {
			t.Errorf("Covers(%q, %q) = %v, want %v", tc.max, tc.rule, got, tc.want)
		}
	}
}

func TestPrefixClass(t *testing.T) {
	for _, tc := range []struct {
		rule string
		want Class
	}{
		{"127.0.0.1:8080", ClassLoopback},
		{"169.254.169.254", ClassLinkLocal},
		{"8.8.8.8", ClassPublic},
		{"8.0.0.0/5", ClassPrivate}, // reaches into 10.0.0.0/8
		{"0.0.0.0/0", ClassUnspecified},
		{"93.184.0.0/16", ClassPublic},
		{"::1", ClassLoopback},
		{"2606:4700::/32", ClassPublic},
		{"2000::/3", ClassDocumentation}, // reaches into 2001:db8::/32
		{"2002::/16", ClassReserved},
		{"fd00:ec2::254", ClassPrivate},
		{"::/0", ClassReserved},
	} {
		r, err := ParseRule(tc.rule)
		if err != nil {
			t.Fatal(err)
		}
		if got := PrefixClass(r.Prefix()); got != tc.want {
			t.Errorf("PrefixClass(%s) = %v, want %v", tc.rule, got, tc.want)
		}
	}
}

// TestOverlaps lists the spellings of a step rule that reach a host named
// by --require-inspection: each must count as the same destination.
func TestOverlaps(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"cdn.example.com", "cdn.example.com", true},
		{"cdn.example.com", "CDN.example.com", true},
		{"cdn.example.com", "cdn.example.com.", true},
		{"cdn.example.com", "cdn.example.com:443", true},
		{"cdn.example.com", "cdn.example.com:80", true},
		{"cdn.example.com", "*.example.com", true},
		{"cdn.example.com", "*.com", true},
		{"cdn.example.com", "*.Example.COM.:443", true},
		{"cdn.example.com:443", "cdn.example.com", true},
		{"cdn.example.com:8443", "*.example.com:8443", true},
		{"*.example.com", "a.b.example.com", true},
		{"*.example.com", "*.b.example.com", true},
		{"*.b.example.com", "*.example.com", true},
		{"10.0.0.0/8", "10.1.2.3", true},
		{"10.1.2.3:8080", "10.0.0.0/8:8080", true},
		{"fd00::/8", "[fd12::/16]:443", true},
		{"cdn.example.com", "cdn.example.com:8443", false}, // no port means 80 and 443
		{"cdn.example.com:443", "cdn.example.com:80", false},
		{"cdn.example.com", "cdn.example.org", false},
		{"cdn.example.com", "xcdn.example.com", false},
		{"cdn.example.com", "*.cdn.example.com", false}, // a wildcard is one or more labels below
		{"cdn.example.com", "*.xample.com", false},      // label boundaries
		{"*.example.com", "*.example.org", false},
		{"*.example.com", "example.com", false},
		{"10.0.0.0/8", "11.0.0.0/8", false},
		{"10.0.0.1", "::ffff:10.0.0.2", false},
		{"cdn.example.com", "10.0.0.1", false}, // names and addresses never overlap
		{"10.0.0.0/8", "*.example.com", false},
	} {
		a, err := ParseRule(tc.a)
		if err != nil {
			t.Fatal(err)
		}
		b, err := ParseRule(tc.b)
		if err != nil {
			t.Fatal(err)
		}
		if got := Overlaps(a, b); got != tc.want {
			t.Errorf("Overlaps(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
		if got := Overlaps(b, a); got != tc.want {
			t.Errorf("Overlaps(%q, %q) = %v, want %v", tc.b, tc.a, got, tc.want)
		}
	}
	if Overlaps(Rule{}, Rule{}) {
		t.Error("the zero Rule overlaps itself")
	}
}
