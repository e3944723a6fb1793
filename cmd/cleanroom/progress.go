package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/cleanroom-ci/cleanroom/runner"
	"github.com/cleanroom-ci/cleanroom/runner/pipeline"
	"github.com/cleanroom-ci/cleanroom/sandbox/egress"
)

// Progress on a terminal: a live line with the elapsed time for work that
// takes a while (image import or pull, artifact hashing) and one line per
// finished fetch. Nothing at all when stderr is not a terminal (a CI log, a
// file, a pipe) or under --log-format json, whose readers want records,
// not carriage returns.

// progressDelay is how long work runs before its live line appears, so
// that quick work (an image already in the store) prints nothing.
const progressDelay = 300 * time.Millisecond

// termProgress draws progress on a terminal.
type termProgress struct {
	mu  sync.Mutex
	w   io.Writer
	now func() time.Time
	// tick is the redraw interval of a live line.
	tick time.Duration
}

// progress returns the run's Progress: a termProgress when stderr is a
// terminal and the log format is text, else nil (no progress).
func (g *globalOptions) progress() runner.Progress {
	if g.logFormat != "text" {
		return nil
	}
	f, ok := g.stderr().(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return &termProgress{w: f, now: time.Now, tick: 200 * time.Millisecond}
}

// Begin shows what with its elapsed time once it has taken progressDelay,
// and a final line with the total when it ends.
func (p *termProgress) Begin(what string) func() {
	start := p.now()
	stop := make(chan struct{})
	done := make(chan bool)
	go func() {
		shown := false
		delay := time.NewTimer(progressDelay)
		defer delay.Stop()
		select {
		case <-stop:
			done <- false
			return
		case <-delay.C:
		}
		t := time.NewTicker(p.tick)
		defer t.Stop()
		for {
			p.mu.Lock()
			fmt.Fprintf(p.w, "\r\033[K%s … %s", what, formatElapsed(p.now().Sub(start)))
			p.mu.Unlock()
			shown = true
			select {
			case <-stop:
				done <- shown
				return
			case <-t.C:
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(stop)
			if <-done {
				p.mu.Lock()
				fmt.Fprintf(p.w, "\r\033[K%s: done in %s\n", what, formatElapsed(p.now().Sub(start)))
				p.mu.Unlock()
			}
		})
	}
}

// Fetch prints one line per dependency fetched or refused.
func (p *termProgress) Fetch(e egress.Event) {
	target := e.URL
	if target == "" {
		target = hostPortString(e.Host, e.Port)
	}
	method := e.Method
	if method == "" {
		method = "CONNECT"
	}
	took := formatElapsed(time.Duration(e.DurationMS) * time.Millisecond)
	var line string
	switch {
	case e.Decision == egress.DecisionDeny:
		line = fmt.Sprintf("fetch [%s] %s %s: denied", e.Step, method, target)
	case e.SHA256 != "":
		line = fmt.Sprintf("fetch [%s] %s %s: %d, %s in %s", e.Step, method, target, e.Status, pipeline.FormatSize(e.Size), took)
	default:
		line = fmt.Sprintf("fetch [%s] %s %s: %d, %s received in %s", e.Step, method, target, e.Status, pipeline.FormatSize(e.BytesIn), took)
	}
	p.mu.Lock()
	fmt.Fprintln(p.w, line)
	p.mu.Unlock()
}

func hostPortString(host string, port int) string {
	if port == 0 {
		return host
	}
	return fmt.Sprintf("%s:%d", host, port)
}

// formatElapsed is formatDuration for a time.Duration.
func formatElapsed(d time.Duration) string { return formatDuration(d.Seconds()) }
