// Command benchrun times commands interleaved (A B C A B C …, the starting
// case rotated each round) so that drift in machine load hits every case
// alike, and prints medians and spreads as JSON. It also prepares the rootfs
// of an OCI archive as a runc bundle, for the runc baseline.
//
//	benchrun time [-rounds N] [-warmup N] [-o FILE] [-ratio A/B]... NAME=COMMAND...
//	benchrun bundle -archive FILE -o DIR [ARG...]
//
// A COMMAND is split into words like a shell would (quotes, no expansion)
// and run directly, stdin from /dev/null. "{run}" in a command becomes a
// tag unique to that execution (w0, w1 for warm-up runs, r0, r1 … for
// measured rounds) and "{i}" a unique counter, for container names and
// per-run files. A command that fails stops the benchmark with its output:
// no number is made up from a failed run.
package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/cleanroom-ci/cleanroom/bench/internal/stats"
	"github.com/cleanroom-ci/cleanroom/bench/internal/timing"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "time":
		err = timeCmd(os.Args[2:])
	case "bundle":
		err = bundleCmd(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchrun:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: benchrun time [-rounds N] [-warmup N] [-o FILE] [-ratio A/B]... NAME=COMMAND...\n       benchrun bundle -archive FILE -o DIR [ARG...]")
	os.Exit(2)
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

// The result format is shared with the report (bench/internal/timing).
type (
	Case   = timing.Case
	Ratio  = timing.Ratio
	Result = timing.Result
)

func timeCmd(args []string) error {
	fs := flag.NewFlagSet("time", flag.ExitOnError)
	rounds := fs.Int("rounds", 10, "measured rounds")
	warmup := fs.Int("warmup", 1, "unmeasured warm-up rounds")
	out := fs.String("o", "", "write the JSON result here (default stdout)")
	timeout := fs.Duration("timeout", 5*time.Minute, "limit for one execution")
	quiet := fs.Bool("q", false, "no progress on stderr")
	var ratios multiFlag
	fs.Var(&ratios, "ratio", "report the per-round ratio A/B of two case names (repeatable)")
	fs.Parse(args)
	if fs.NArg() == 0 || *rounds < 1 {
		return errors.New("time: need at least one NAME=COMMAND and -rounds >= 1")
	}
	res := &Result{Rounds: *rounds, Warmup: *warmup, Order: "interleaved, starting case rotated each round", Started: time.Now().UTC()}
	byName := map[string]*Case{}
	argvs := map[string][]string{}
	for _, a := range fs.Args() {
		name, cmd, ok := strings.Cut(a, "=")
		if !ok || name == "" || cmd == "" {
			return fmt.Errorf("case %q: want NAME=COMMAND", a)
		}
		if byName[name] != nil {
			return fmt.Errorf("case %q given twice", name)
		}
		argv, err := splitWords(cmd)
		if err != nil {
			return fmt.Errorf("case %s: %w", name, err)
		}
		c := &Case{Name: name, Command: cmd}
		res.Cases = append(res.Cases, c)
		byName[name] = c
		argvs[name] = argv
	}
	for _, r := range ratios {
		a, b, ok := strings.Cut(r, "/")
		if !ok || byName[a] == nil || byName[b] == nil {
			return fmt.Errorf("-ratio %q: want A/B of two case names", r)
		}
	}

	counter := 0
	n := len(res.Cases)
	for round := -*warmup; round < *rounds; round++ {
		tag := "r" + strconv.Itoa(round)
		if round < 0 {
			tag = "w" + strconv.Itoa(round+*warmup)
		}
		for k := range n {
			c := res.Cases[(k+max(round, 0))%n]
			counter++
			argv := expand(argvs[c.Name], tag, counter)
			ms, rss, err := execOnce(argv, *timeout)
			if err != nil {
				return fmt.Errorf("case %s, %s: %w", c.Name, tag, err)
			}
			if round >= 0 {
				c.SamplesMS = append(c.SamplesMS, ms)
				c.MaxRSSKB = append(c.MaxRSSKB, rss)
			}
			if !*quiet {
				fmt.Fprintf(os.Stderr, "  %-4s %-14s %9.1f ms\n", tag, c.Name, ms)
			}
		}
	}
	for _, c := range res.Cases {
		c.Stats = stats.Summarize(c.SamplesMS)
		c.RSSStats = stats.Summarize(c.MaxRSSKB)
	}
	for _, r := range ratios {
		a, b, _ := strings.Cut(r, "/")
		ca, cb := byName[a], byName[b]
		s := stats.Ratios(ca.SamplesMS, cb.SamplesMS)
		res.Ratios = append(res.Ratios, Ratio{Name: r, Samples: s, Stats: stats.Summarize(s), OfMedians: ca.Stats.Median / cb.Stats.Median})
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if *out == "" {
		_, err = os.Stdout.Write(b)
		return err
	}
	return os.WriteFile(*out, b, 0o644)
}

func expand(argv []string, tag string, i int) []string {
	out := make([]string, len(argv))
	for k, a := range argv {
		a = strings.ReplaceAll(a, "{run}", tag)
		out[k] = strings.ReplaceAll(a, "{i}", strconv.Itoa(i))
	}
	return out
}

// execOnce runs argv and returns its wall time in milliseconds and the peak
// RSS (KiB) of the process and the descendants it waited for.
func execOnce(argv []string, timeout time.Duration) (float64, float64, error) {
	var outBuf tailBuffer
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = nil // /dev/null
	cmd.Stdout = &outBuf
	cmd.Stderr = &outBuf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	timer := time.AfterFunc(timeout, func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	// The command runs in its own process group (so that a timeout ends
	// all of it), where a Ctrl-C does not reach: pass INT and TERM on,
	// let it clean up (cleanroom removes its sandboxes), then stop.
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case sig := <-sigc:
		syscall.Kill(-cmd.Process.Pid, sig.(syscall.Signal))
		<-done
		timer.Stop()
		return 0, 0, fmt.Errorf("interrupted by %v", sig)
	}
	signal.Stop(sigc)
	elapsed := time.Since(start)
	timer.Stop()
	if err != nil {
		return 0, 0, fmt.Errorf("%q: %v\n--- output (last 4 KiB) ---\n%s", strings.Join(argv, " "), err, outBuf.String())
	}
	var rss float64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = float64(ru.Maxrss)
	}
	return float64(elapsed.Microseconds()) / 1000, rss, nil
}

// tailBuffer keeps the last 4 KiB written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = append(t.b[:0], t.b[len(t.b)-4096:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }

// splitWords splits s like a POSIX shell would split a simple command:
// whitespace separates words, single quotes are literal, double quotes
// allow \" and \\, a backslash outside quotes escapes the next character.
// Nothing is expanded.
func splitWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unterminated single quote")
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			inWord = true
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && (s[i+1] == '"' || s[i+1] == '\\') {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New("unterminated double quote")
			}
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			inWord = true
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	if len(words) == 0 {
		return nil, errors.New("empty command")
	}
	return words, nil
}

// bundleCmd makes a runc bundle: the (single-platform) image of an OCI
// archive, all layers flattened, as DIR/rootfs (the very same files the
// other cases run) and DIR/config.json from `runc spec` with the process
// args set and no terminal.
func bundleCmd(args []string) error {
	fs := flag.NewFlagSet("bundle", flag.ExitOnError)
	archive := fs.String("archive", "", "OCI archive (a tar of an OCI image layout)")
	out := fs.String("o", "", "bundle directory to create")
	fs.Parse(args)
	if *archive == "" || *out == "" || fs.NArg() == 0 {
		return errors.New("bundle: need -archive, -o and the process args")
	}
	if err := extractRootfs(*archive, filepath.Join(*out, "rootfs")); err != nil {
		return err
	}
	cfgPath := filepath.Join(*out, "config.json")
	os.Remove(cfgPath)
	if b, err := exec.Command("runc", "spec", "--bundle", *out).CombinedOutput(); err != nil {
		return fmt.Errorf("runc spec: %v: %s", err, b)
	}
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		return err
	}
	var spec map[string]any
	if err := json.Unmarshal(raw, &spec); err != nil {
		return fmt.Errorf("%s: %w", cfgPath, err)
	}
	proc, ok := spec["process"].(map[string]any)
	if !ok {
		return fmt.Errorf("%s: no process object", cfgPath)
	}
	proc["args"] = fs.Args()
	proc["terminal"] = false
	raw, err = json.MarshalIndent(spec, "", "\t")
	if err != nil {
		return err
	}
	return os.WriteFile(cfgPath, raw, 0o644)
}

// extractRootfs flattens the one image of an OCI archive into out.
func extractRootfs(archive, out string) error {
	tmp, err := os.MkdirTemp("", "benchrun-layout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	err = untar(f, tmp)
	f.Close()
	if err != nil {
		return fmt.Errorf("unpack %s: %w", archive, err)
	}
	idx, err := layout.ImageIndexFromPath(tmp)
	if err != nil {
		return err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	if len(im.Manifests) != 1 {
		return fmt.Errorf("%s: want exactly one image, found %d", archive, len(im.Manifests))
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		return err
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	return untar(rc, out)
}

// untar extracts a tar stream into dir: regular files, directories and
// symlinks, refusing paths that leave dir.
func untar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean("/" + h.Name)
		if name == "/" {
			continue
		}
		p := filepath.Join(dir, name)
		mode := os.FileMode(h.Mode) & os.ModePerm
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, mode|0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			var buf bytes.Buffer
			if _, err := io.Copy(&buf, tr); err != nil {
				return err
			}
			if err := os.WriteFile(p, buf.Bytes(), mode); err != nil {
				return err
			}
			if err := os.Chmod(p, mode); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			os.Remove(p)
			if err := os.Symlink(h.Linkname, p); err != nil {
				return err
			}
		case tar.TypeLink:
			target := filepath.Join(dir, filepath.Clean("/"+h.Linkname))
			os.Remove(p)
			if err := os.Link(target, p); err != nil {
				return err
			}
		default:
			// Device nodes and the like: runc creates /dev itself.
		}
	}
}
