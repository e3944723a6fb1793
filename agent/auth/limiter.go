package auth

import (
	"container/list"
	"math"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultMaxEntries bounds the limiter's memory: about a megabyte however
// many addresses fail.
const DefaultMaxEntries = 10000

// FailureLimiter limits failed authentications per route and client
// address: each (route, address) may fail burst times in a row, then once
// per every. A route is what was authenticated against (the API's tokens,
// one webhook's secret), so failures against one never limit another.
// Successes cost nothing, and the callers let a valid credential through
// even from a limited address: many clients share an address (an office
// NAT, a forge's pool of delivery senders), and one of them failing must
// not lock the others out. What defeats guessing is the credentials'
// entropy (256-bit tokens, webhook secrets of 16 bytes or more); the
// limiter bounds the noise and the work of answering it.
type FailureLimiter struct {
	burst int
	every time.Duration
	max   int
	now   func() time.Time

	mu  sync.Mutex
	m   map[string]*list.Element
	lru list.List // of *limEntry, most recent failure at the front
}

type limEntry struct {
	key  string
	lim  *rate.Limiter
	last time.Time
}

// NewFailureLimiter allows burst failures per address, refilled at one per
// every.
func NewFailureLimiter(burst int, every time.Duration) *FailureLimiter {
	if burst < 1 {
		burst = 1
	}
	return &FailureLimiter{burst: burst, every: every, max: DefaultMaxEntries, now: time.Now, m: map[string]*list.Element{}}
}

// Allowed reports whether ip may fail on route now.
func (l *FailureLimiter) Allowed(route, ip string) bool {
	return l.RetryAfter(route, ip) == 0
}

// RetryAfter is how long ip must wait before it may fail on route again;
// 0 if it may now.
func (l *FailureLimiter) RetryAfter(route, ip string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.m[limiterKey(route, ip)]
	if !ok {
		return 0
	}
	tokens := e.Value.(*limEntry).lim.TokensAt(l.now())
	if tokens >= 1 {
		return 0
	}
	return time.Duration(math.Ceil((1 - tokens) * float64(l.every)))
}

// Fail records a failed authentication from ip on route.
func (l *FailureLimiter) Fail(route, ip string) {
	key := limiterKey(route, ip)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.evictLocked(now)
	el, ok := l.m[key]
	if ok {
		l.lru.MoveToFront(el)
	} else {
		el = l.lru.PushFront(&limEntry{key: key, lim: rate.NewLimiter(rate.Every(l.every), l.burst)})
		l.m[key] = el
		for len(l.m) > l.max {
			l.removeLocked(l.lru.Back())
		}
	}
	e := el.Value.(*limEntry)
	e.last = now
	e.lim.AllowN(now, 1)
}

// Len is the number of (route, address) pairs tracked.
func (l *FailureLimiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// evictLocked drops addresses whose allowance has refilled completely:
// such an entry behaves exactly like no entry. The list is ordered by last
// failure, so only the tail needs looking at.
func (l *FailureLimiter) evictLocked(now time.Time) {
	full := time.Duration(l.burst) * l.every
	for el := l.lru.Back(); el != nil; el = l.lru.Back() {
		if now.Sub(el.Value.(*limEntry).last) < full {
			return
		}
		l.removeLocked(el)
	}
}

func (l *FailureLimiter) removeLocked(el *list.Element) {
	delete(l.m, el.Value.(*limEntry).key)
	l.lru.Remove(el)
}

// limiterKey groups IPv6 clients by /64: one host usually holds a whole
// /64, and per-address limits would give it 2^64 allowances.
func limiterKey(route, ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return route + " " + ip
	}
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.WithZone("").Prefix(64)
		return route + " " + p.String()
	}
	return route + " " + a.String()
}
