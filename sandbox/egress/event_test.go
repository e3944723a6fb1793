package egress

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestJSONLRecorder(t *testing.T) {
	var buf bytes.Buffer
	r := NewJSONLRecorder(&buf)
	full := Event{
		Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), Step: "build", Conn: 7, Method: "GET", Scheme: "http",
		Host: "deps.test", Port: 443, Addr: "192.0.2.1:443", URL: "http://deps.test/x", Status: 200,
		BytesIn: 10, BytesOut: 3, SHA256: "ab", Size: 10, DurationMS: 5, Decision: DecisionAllow,
		Rule: "deps.test", Reason: "matched", Module: "example.test/dep", Version: "v1.0.0",
	}
	r.Record(full)
	r.Record(Event{Step: "build", Decision: DecisionDeny})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("lines: %q", buf.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"time", "step", "conn", "method", "scheme", "host", "port", "addr", "url", "status",
		"bytesIn", "bytesOut", "sha256", "size", "durationMs", "decision", "rule", "reason", "module", "version"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, lines[0])
		}
	}
	if len(m) != 20 {
		t.Errorf("unexpected JSON keys: %s", lines[0])
	}
	var back Event
	if err := json.Unmarshal([]byte(lines[0]), &back); err != nil || back != full {
		t.Errorf("round trip: %+v %v", back, err)
	}
	if !strings.Contains(lines[1], `"decision":"deny"`) || strings.Contains(lines[1], "sha256") {
		t.Errorf("sparse event: %s", lines[1])
	}
	evs := r.Events()
	evs[0].Host = "mutated"
	if r.Events()[0].Host != "deps.test" {
		t.Error("Events must return a copy")
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestJSONLRecorderErrorsAndMulti(t *testing.T) {
	r := NewJSONLRecorder(failWriter{})
	mem := NewJSONLRecorder(nil)
	m := MultiRecorder{r, nil, mem}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.Record(Event{Conn: uint64(i)})
		}()
	}
	wg.Wait()
	if r.Err() == nil || len(r.Events()) != 50 || len(mem.Events()) != 50 || mem.Dropped() != 0 {
		t.Errorf("err %v, %d/%d events", r.Err(), len(r.Events()), len(mem.Events()))
	}
}

func TestSummaryBounded(t *testing.T) {
	s := newSummary()
	for i := range maxSummaryEntries + 10 {
		s.deny(strings.Repeat("x", i%7)+string(rune('a'+i%26))+"-"+strings.Repeat("y", i/26), "", "r")
	}
	s.deny("a-", "", "r")
	if n := len(s.list()); n != maxSummaryEntries {
		t.Errorf("%d entries", n)
	}
}
