package attack

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cleanroom-ci/cleanroom/internal/clitest"
)

// Caps on what a step can make the runner spend: its log, its egress
// events, the artifacts it asks the runner to hash, the workspace it fills.
func TestSpendAttacks(t *testing.T) {
	e := clitest.New(t, cfg)
	out := filepath.Join(e.Dir, ".cleanroom")

	e.Pipeline("version: 1\nimage: IMAGE\nsteps:\n  - name: flood\n    run: yes 0123456789abcdef0123456789abcdef | head -c 20000000\n")
	r := e.Run(nil, "run", "--log-limit", "1MiB")
	log, _ := os.ReadFile(filepath.Join(out, "logs", "flood.log"))
	check(t, "resources", "print 20 MB with --log-limit 1MiB", "log kept at the cap, with a truncation marker",
		fmt.Sprintf("exit %d, log %d bytes, marker: %v", r.Code, len(log), bytes.Contains(log, []byte("output truncated"))),
		r.Code == 0 && len(log) <= 1<<20+512 && bytes.Contains(log, []byte("output truncated")))

	e.Pipeline(`version: 1
image: IMAGE
steps:
  - name: probe
    timeout: 5m
    run: |
      i=0; while [ $i -lt 3000 ]; do wget -q -O /dev/null "http://h$i.attack.test/" 2>/dev/null || true; i=$((i+1)); done; echo done
`)
	r = e.Run(nil, "run")
	events := len(e.Events())
	warnings := strings.Count(r.Stderr, "egress denied")
	check(t, "resources", "3000 denied requests to distinct host names (runner memory and egress log)", "at most 1000 recorded one by one, the rest counted per host; at most 100 warnings",
		fmt.Sprintf("exit %d, %d events in egress.jsonl, %d warnings", r.Code, events, warnings),
		r.Code == 0 && events <= 2001 && events < 3000 && warnings <= 100)

	e.Pipeline("version: 1\nimage: IMAGE\nsteps:\n  - name: sparse\n    run: mkdir -p out && truncate -s 8G out/big\nartifacts: [\"out/big\"]\n")
	start := time.Now()
	r = e.Run(nil, "run")
	took := time.Since(start)
	check(t, "resources", "an 8 GiB sparse artifact made in milliseconds", "refused over the artifact size cap (exit 1), not hashed",
		fmt.Sprintf("exit %d after %.1fs: %s", r.Code, took.Seconds(), lastMatch(r.Stdout, "error:")),
		r.Code == 1 && strings.Contains(r.Stdout, "over the cap"))

	e.Pipeline("version: 1\nimage: IMAGE\nsteps:\n  - name: fill\n    run: dd if=/dev/zero of=fill bs=1M count=400\n")
	r = e.Run(nil, "run", "--workspace-size", "128MiB")
	check(t, "resources", "fill the workspace (400 MB into --workspace-size 128MiB)", "the step fails with ENOSPC (exit 1); the host disk is untouched",
		fmt.Sprintf("exit %d, %s", r.Code, lastMatch(r.Stderr, "No space")), r.Code == 1 && strings.Contains(r.Stderr, "No space left on device"))
	clitest.RequireNoResidue(t, cfg)
}
