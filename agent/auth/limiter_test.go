package auth

import (
	"fmt"
	"testing"
	"time"
)

func newTestLimiter(burst int, every time.Duration, max int) (*FailureLimiter, *fakeClock) {
	l := NewFailureLimiter(burst, every)
	clock := &fakeClock{t: time.Unix(1_000_000, 0)}
	l.now = clock.Now
	l.max = max
	return l, clock
}

func TestLimiterBurstAndRefill(t *testing.T) {
	l, clock := newTestLimiter(3, 10*time.Second, 100)
	const ip = "192.0.2.1"
	for i := range 3 {
		if !l.Allowed("api", ip) {
			t.Fatalf("limited after %d failures, burst is 3", i)
		}
		l.Fail("api", ip)
	}
	if l.Allowed("api", ip) {
		t.Fatal("not limited after 3 failures")
	}
	if d := l.RetryAfter("api", ip); d <= 0 || d > 10*time.Second {
		t.Fatalf("RetryAfter = %v, want in (0, 10s]", d)
	}
	if !l.Allowed("api", "192.0.2.2") {
		t.Fatal("another address is limited too")
	}
	clock.Advance(10 * time.Second)
	if !l.Allowed("api", ip) {
		t.Fatal("still limited after one refill period")
	}
	l.Fail("api", ip)
	if l.Allowed("api", ip) {
		t.Fatal("one refill should allow exactly one more failure")
	}
}

func TestLimiterIPv6ByPrefix(t *testing.T) {
	l, _ := newTestLimiter(2, time.Minute, 100)
	l.Fail("api", "2001:db8:1:2::1")
	l.Fail("api", "2001:db8:1:2:ffff::9")
	if l.Allowed("api", "2001:db8:1:2::77") {
		t.Fatal("an address in the same /64 is not limited")
	}
	if !l.Allowed("api", "2001:db8:1:3::1") {
		t.Fatal("another /64 is limited")
	}
	// IPv4-mapped IPv6 is the IPv4 address.
	l.Fail("api", "::ffff:192.0.2.7")
	l.Fail("api", "192.0.2.7")
	if l.Allowed("api", "192.0.2.7") {
		t.Fatal("a v4-mapped address counted separately from its IPv4 form")
	}
}

func TestLimiterBoundedUnderSpray(t *testing.T) {
	l, clock := newTestLimiter(5, time.Second, 100)
	for i := range 10_000 {
		l.Fail("api", fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255))
		if n := l.Len(); n > 100 {
			t.Fatalf("%d entries after %d addresses, cap 100", n, i+1)
		}
	}
	// The most recent failers are the ones kept.
	last := "10.0.39.15" // 9999
	for range 4 {
		l.Fail("api", last)
	}
	if l.Allowed("api", last) {
		t.Fatal("the most recent failing address was evicted")
	}

	// Entries whose allowance has refilled go away on their own.
	clock.Advance(5 * time.Second)
	l.Fail("api", "192.0.2.1")
	if n := l.Len(); n != 1 {
		t.Fatalf("%d entries after all others went idle, want 1", n)
	}
	if !l.Allowed("api", last) {
		t.Fatal("an evicted idle address is still limited")
	}
}

func TestLimiterDefaultCap(t *testing.T) {
	l := NewFailureLimiter(1, time.Hour)
	if l.max != DefaultMaxEntries || DefaultMaxEntries != 10000 {
		t.Fatalf("cap = %d", l.max)
	}
	for i := range DefaultMaxEntries + 500 {
		l.Fail("api", fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255))
	}
	if n := l.Len(); n != DefaultMaxEntries {
		t.Fatalf("Len = %d, want %d", n, DefaultMaxEntries)
	}
}

func TestLimiterPerRoute(t *testing.T) {
	l, _ := newTestLimiter(2, time.Minute, 100)
	l.Fail("hook:a", "192.0.2.1")
	l.Fail("hook:a", "192.0.2.1")
	if l.Allowed("hook:a", "192.0.2.1") {
		t.Fatal("not limited after 2 failures on the route")
	}
	if !l.Allowed("hook:b", "192.0.2.1") || !l.Allowed("api", "192.0.2.1") {
		t.Fatal("failures on one route limited another")
	}
}
