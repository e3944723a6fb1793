package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"
)

// spanWriter writes one JSON object per span to a file (--trace): where a
// run's time goes (image resolve, namespace and proxy, container create,
// task start, wait, teardown, provenance), for benchmarks and diagnosis.
type spanWriter struct {
	mu  sync.Mutex
	f   *os.File
	enc *json.Encoder
	t0  time.Time
}

func newSpanWriter(path string) (*spanWriter, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--trace: %w", err)
	}
	return &spanWriter{f: f, enc: json.NewEncoder(f), t0: time.Now()}, nil
}

func (w *spanWriter) span(name string, start, end time.Time, attrs ...any) {
	rec := map[string]any{
		"span":       name,
		"startMs":    float64(start.Sub(w.t0).Microseconds()) / 1000,
		"durationMs": float64(end.Sub(start).Microseconds()) / 1000,
	}
	for i := 0; i+1 < len(attrs); i += 2 {
		if k, ok := attrs[i].(string); ok {
			rec[k] = attrs[i+1]
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.enc.Encode(rec)
}

func (w *spanWriter) Close() error { return w.f.Close() }
