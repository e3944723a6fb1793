package egress

import (
	"encoding/json"
	"io"
	"sync"
	"time"
)

// Decision values carried by events.
const (
	DecisionAllow      = "allow"
	DecisionDeny       = "deny"
	DecisionAuditAllow = "audit-allow"
)

// Event records one request through the proxy. There is exactly one event
// per request: a denial is recorded the moment it is decided; an allowed
// request (including a CONNECT tunnel) is recorded once, when it finishes,
// with its final status, byte counts and body hash. A request that is
// allowed by policy but fails upstream (resolution, dial, TLS) is recorded
// as "allow" with status 502 and the failure in Reason.
type Event struct {
	// Time is when the request was received.
	Time time.Time `json:"time"`
	Step string    `json:"step"`
	// Conn numbers the client connection within this proxy.
	Conn   uint64 `json:"conn,omitempty"`
	Method string `json:"method,omitempty"`
	// Scheme is "http" or "https" for requests the proxy makes itself,
	// "connect" for tunnels.
	Scheme string `json:"scheme,omitempty"`
	// Host and Port are the destination as normalised.
	Host string `json:"host,omitempty"`
	Port int    `json:"port,omitempty"`
	// Addr is the IP:port actually connected to.
	Addr string `json:"addr,omitempty"`
	URL  string `json:"url,omitempty"`
	// Status is the HTTP status the client got: 200 for a spliced tunnel,
	// 502 for an upstream failure, 0 when a tunnel was cut after its 200
	// (for example a ClientHello that failed the SNI check).
	Status int `json:"status,omitempty"`
	// BytesOut counts bytes from the step to the destination (request body,
	// or the client side of a tunnel); BytesIn the other way.
	BytesIn  int64 `json:"bytesIn,omitempty"`
	BytesOut int64 `json:"bytesOut,omitempty"`
	// SHA256 and Size describe the response body; they are set only when
	// the whole body reached the client.
	SHA256     string `json:"sha256,omitempty"`
	Size       int64  `json:"size,omitempty"`
	DurationMS int64  `json:"durationMs"`
	Decision   string `json:"decision"`
	Rule       string `json:"rule,omitempty"`
	Reason     string `json:"reason,omitempty"`
	// Module and Version are set for module-proxy fetches.
	Module  string `json:"module,omitempty"`
	Version string `json:"version,omitempty"`
	// SHA512 is the base64 sha512 of the body ("sha512-…", as lockfiles
	// write it), computed for package tarballs only.
	SHA512 string `json:"sha512,omitempty"`
	// Inspected marks a CONNECT tunnel whose TLS the proxy terminated: its
	// requests are recorded one by one (with URL and sha256), so the
	// tunnel itself is not a dependency.
	Inspected bool `json:"inspected,omitempty"`
	// Source says where a body came from when not from upstream: "cache"
	// (egress.cache: prefer) or "replay" (a recorded material).
	Source string `json:"source,omitempty"`

	// alias is the URL a redirected module fetch was first asked for; the
	// store indexes the body under it too.
	alias string
}

// Recorder receives every event. Implementations must be safe for
// concurrent use and should not block for long: they run on the request
// path.
type Recorder interface {
	Record(Event)
}

// MaxKeptEvents bounds the events a JSONLRecorder keeps in memory, so a step
// that hammers the proxy with denied requests cannot exhaust the runner's
// memory. Every event is still written out.
const MaxKeptEvents = 100_000

// JSONLRecorder writes one JSON object per line and keeps a copy of the
// events in memory for provenance.
type JSONLRecorder struct {
	mu      sync.Mutex
	enc     *json.Encoder
	events  []Event
	dropped int
	err     error
}

// NewJSONLRecorder returns a recorder writing to w (which may be nil to
// keep events in memory only).
func NewJSONLRecorder(w io.Writer) *JSONLRecorder {
	r := &JSONLRecorder{}
	if w != nil {
		r.enc = json.NewEncoder(w)
		r.enc.SetEscapeHTML(false)
	}
	return r
}

// Record implements Recorder.
func (r *JSONLRecorder) Record(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.enc != nil && r.err == nil {
		r.err = r.enc.Encode(e)
	}
	if len(r.events) < MaxKeptEvents {
		r.events = append(r.events, e)
	} else {
		r.dropped++
	}
}

// Events returns a copy of the events kept in memory.
func (r *JSONLRecorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// Dropped returns how many events were written but not kept in memory.
func (r *JSONLRecorder) Dropped() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped
}

// Err returns the first write error; after it, events are only kept in
// memory.
func (r *JSONLRecorder) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// MultiRecorder sends every event to each of its recorders in turn.
type MultiRecorder []Recorder

// Record implements Recorder.
func (m MultiRecorder) Record(e Event) {
	for _, r := range m {
		if r != nil {
			r.Record(e)
		}
	}
}

type nopRecorder struct{}

func (nopRecorder) Record(Event) {}
