// Package timing is the result format of `benchrun time`: the commands
// timed in interleaved rounds and the per-round ratios between them. The
// timer writes it and the report reads it, so both use these types.
package timing

import (
	"fmt"
	"time"

	"github.com/cleanroom-ci/cleanroom/bench/internal/stats"
)

// Case is one command and its measurements, in round order.
type Case struct {
	Name      string        `json:"name"`
	Command   string        `json:"command"`
	SamplesMS []float64     `json:"samplesMs"`
	MaxRSSKB  []float64     `json:"maxRssKb"`
	Stats     stats.Summary `json:"stats"`
	RSSStats  stats.Summary `json:"rssStats"`
}

// Ratio is the per-round ratio of two cases of the same run.
type Ratio struct {
	Name    string        `json:"name"`
	Samples []float64     `json:"samples"`
	Stats   stats.Summary `json:"stats"`
	// OfMedians is median(A)/median(B).
	OfMedians float64 `json:"ofMedians"`
}

// Result is what `benchrun time` writes.
type Result struct {
	Rounds  int       `json:"rounds"`
	Warmup  int       `json:"warmup"`
	Order   string    `json:"order"`
	Started time.Time `json:"started"`
	Cases   []*Case   `json:"cases"`
	Ratios  []Ratio   `json:"ratios"`
}

// Case returns the case of that name.
func (r *Result) Case(name string) (*Case, error) {
	for _, c := range r.Cases {
		if c.Name == name {
			return c, nil
		}
	}
	return nil, fmt.Errorf("no case %q", name)
}

// Ratio returns the ratio of that name ("a/b").
func (r *Result) Ratio(name string) (*Ratio, error) {
	for i := range r.Ratios {
		if r.Ratios[i].Name == name {
			return &r.Ratios[i], nil
		}
	}
	return nil, fmt.Errorf("no ratio %q", name)
}
