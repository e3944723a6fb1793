package egress

import (
	"sort"
	"sync"
)

// Denial summarises denied requests to one destination for the run report.
type Denial struct {
	// Target is "host:port" as normalised, or "" for requests that were
	// rejected before a destination could be read (malformed requests).
	Target string `json:"target"`
	// Hint is the allowlist entry that would allow it, or "" when none can
	// (smuggling attempts, malformed requests).
	Hint string `json:"hint,omitempty"`
	// Reason is the reason given for the first such denial.
	Reason string `json:"reason"`
	Count  int    `json:"count"`
}

// maxSummaryEntries bounds the summary: a step that probes thousands of
// distinct hosts must not grow the runner's memory without limit.
const maxSummaryEntries = 10_000

type summary struct {
	mu        sync.Mutex
	denials   map[[2]string]*Denial
	order     [][2]string
	wouldNeed map[string]bool
}

func newSummary() *summary {
	return &summary{denials: map[[2]string]*Denial{}, wouldNeed: map[string]bool{}}
}

func (s *summary) deny(target, hint, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := [2]string{target, hint}
	if d, ok := s.denials[k]; ok {
		d.Count++
		return
	}
	if len(s.denials) >= maxSummaryEntries {
		return
	}
	s.denials[k] = &Denial{Target: target, Hint: hint, Reason: reason, Count: 1}
	s.order = append(s.order, k)
}

func (s *summary) need(hint string) {
	if hint == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.wouldNeed) < maxSummaryEntries {
		s.wouldNeed[hint] = true
	}
}

func (s *summary) list() []Denial {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Denial, 0, len(s.order))
	for _, k := range s.order {
		out = append(out, *s.denials[k])
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Target < out[j].Target })
	return out
}

func (s *summary) needs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.wouldNeed))
	for h := range s.wouldNeed {
		out = append(out, h)
	}
	sort.Strings(out)
	return out
}
