package runner

import (
	"fmt"
	"io"
	"net"
	"sort"
	"sync"

	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
)

// Caps on what a step can make the runner spend. A step controls how many
// requests it makes, how much it prints and how large its files are; none
// of these may grow the runner's memory or the host's disk without bound.
const (
	// DefaultLogLimit caps each step's log (Config.LogLimit).
	DefaultLogLimit = 64 << 20
	// deniedEventLimit is how many denied requests of one step are
	// recorded one by one in egress.jsonl; past it they are counted per
	// host and written as one summary event per host when the step ends.
	deniedEventLimit = 1000
	// summaryHostLimit bounds the hosts counted past deniedEventLimit;
	// the rest are counted together as "(other hosts)".
	summaryHostLimit = 1000
	// warnLimit bounds the distinct denials logged as warnings per step.
	warnLimit = 100
)

// otherHosts is the summary bucket for hosts past summaryHostLimit.
const otherHosts = "(other hosts)"

// stepRecorder is a step's event sink in front of the run's recorder: it
// logs each distinct denial once (up to warnLimit), and past
// deniedEventLimit denials it stops forwarding them and counts them per
// host instead. Allowed requests are always forwarded: they are the
// dependencies the provenance lists.
type stepRecorder struct {
	next egress.Recorder
	log  interface {
		Warn(string, ...any)
	}
	step string

	mu      sync.Mutex
	seen    map[string]bool
	warned  bool // the "no more warnings" warning was given
	denied  int
	counted map[string]int // host → denials not recorded one by one
}

func newStepRecorder(next egress.Recorder, log interface{ Warn(string, ...any) }, step string) *stepRecorder {
	return &stepRecorder{next: next, log: log, step: step, seen: map[string]bool{}, counted: map[string]int{}}
}

func (w *stepRecorder) Record(e egress.Event) {
	if e.Decision != egress.DecisionDeny {
		w.next.Record(e)
		return
	}
	key := net.JoinHostPort(e.Host, fmt.Sprint(e.Port))
	if e.Host == "" {
		key = "(malformed request)"
	}
	w.mu.Lock()
	w.denied++
	forward := w.denied <= deniedEventLimit
	if !forward {
		host := e.Host
		if _, ok := w.counted[host]; !ok && len(w.counted) >= summaryHostLimit {
			host = otherHosts
		}
		w.counted[host]++
	}
	first := !w.seen[key] && len(w.seen) < warnLimit
	if first {
		w.seen[key] = true
	}
	tooMany := !first && !w.seen[key] && !w.warned
	if tooMany {
		w.warned = true
	}
	w.mu.Unlock()
	if forward {
		w.next.Record(e)
	}
	switch {
	case first:
		w.log.Warn("egress denied", "target", key, "reason", e.Reason)
	case tooMany:
		w.log.Warn(fmt.Sprintf("more than %d distinct egress denials; further ones are counted, not logged", warnLimit))
	}
}

// flush writes the counted denials as one event per host, sorted.
func (w *stepRecorder) flush() {
	w.mu.Lock()
	counted := w.counted
	w.counted = map[string]int{}
	w.mu.Unlock()
	hosts := make([]string, 0, len(counted))
	for h := range counted {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		w.next.Record(egress.Event{
			Step: w.step, Host: h, Decision: egress.DecisionDeny,
			Reason: fmt.Sprintf("summarised: %d more denied requests (past %d, denials are counted per host, not recorded one by one)", counted[h], deniedEventLimit),
		})
	}
}

// capWriter passes through the first limit bytes of a step's output, then
// writes one truncation marker and discards the rest (counting it).
type capWriter struct {
	w       io.Writer
	limit   int64
	written int64
	dropped int64
}

func newCapWriter(w io.Writer, limit int64) *capWriter {
	if limit == 0 {
		limit = DefaultLogLimit
	}
	return &capWriter{w: w, limit: limit}
}

func (c *capWriter) Write(b []byte) (int, error) {
	if c.limit < 0 {
		return c.w.Write(b)
	}
	n := len(b)
	room := c.limit - c.written
	if int64(n) <= room {
		c.written += int64(n)
		return c.w.Write(b)
	}
	if room > 0 {
		c.w.Write(b[:room])
		c.written += room
	}
	// The marker goes out with the first byte dropped, also when an
	// earlier write filled the cap exactly.
	if c.dropped == 0 {
		fmt.Fprintf(c.w, "\n[cleanroom: output truncated: the step's log reached its cap of %s (--log-limit); the rest is discarded]\n", pipeline.FormatSize(c.limit))
	}
	c.dropped += int64(n) - max(room, 0)
	return n, nil
}
