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

// FailureLimiter limits failed authentications per client address: each
// address may fail burst times in a row, then once per every. Successes
// cost nothing, so a user with a good token is never slowed down.
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

// Allowed reports whether ip may try to authenticate now.
func (l *FailureLimiter) Allowed(ip string) bool {
	return l.RetryAfter(ip) == 0
}

// RetryAfter is how long ip must wait before it may try again; 0 if it may
// now.
func (l *FailureLimiter) RetryAfter(ip string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.m[limiterKey(ip)]
	if !ok {
		return 0
	}
	tokens := e.Value.(*limEntry).lim.TokensAt(l.now())
	if tokens >= 1 {
		return 0
	}
	return time.Duration(math.Ceil((1 - tokens) * float64(l.every)))
}

// Fail records a failed authentication from ip.
func (l *FailureLimiter) Fail(ip string) {
	key := limiterKey(ip)
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

// Len is the number of addresses tracked.
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
func limiterKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.WithZone("").Prefix(64)
		return p.String()
	}
	return a.String()
}
