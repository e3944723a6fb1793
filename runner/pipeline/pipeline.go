// Package pipeline loads and validates cleanroom.yaml, the pipeline file.
//
// Version 1 of the format:
//
//	version: 1
//	image: oci-archive:./images/builder.tar   # default image for every step
//	env: {CGO_ENABLED: "0"}
//	egress:
//	  allow: ["example-mirror.internal", "*.pkg.example.org:443"]
//	  mode: enforce                           # enforce (default) | audit
//	  inspect: false                          # terminate TLS, record every https body (default false)
//	  cache: record                           # record (default) | prefer | off
//	steps:
//	  - name: build
//	    image: golang:1.26                    # optional override of the default
//	    run: |                                # run by /bin/sh -e -c, never interpolated
//	      go build -o out/app ./cmd/app
//	    env: {GOFLAGS: -trimpath}
//	    egress: {allow: []}                   # replaces the default; [] = no egress
//	    timeout: 10m
//	    resources: {memory: 1GiB, cpus: 1.5, pids: 512}
//	    services:                             # beside this step (replaces the top-level list)
//	      - image: redis:7.2@sha256:…         # same rules as step images
//	        alias: redis                      # the step reaches it at redis:PORT and 127.0.0.1:PORT
//	        command: [redis-server, --save, ""]
//	        ready: {port: 6379, timeout: 30s} # or command: [redis-cli, ping]
//	artifacts: ["out/app"]                    # globs relative to the workspace
//	sign: {keyless: false}
//
// Decoding is strict, because a typo in a hermetic build's configuration
// should fail loudly rather than silently weaken it: unknown fields, wrong
// types and unquoted non-string values where strings are expected are all
// errors. Every error names the file, line, column and field path, and
// Parse reports all the problems it finds at once (see ErrorList).
//
// Values:
//   - version must be the integer 1.
//   - Strings (names, images, run, env values, rules, artifacts) must be
//     strings in YAML: `CGO_ENABLED: 0` is an error asking for "0", so a
//     step sees exactly what was written. Block scalars (| and >) and the
//     !!str tag are strings too.
//   - Step names match ^[a-z0-9][a-z0-9_.-]{0,62}$ and are unique; run is
//     required and not blank; every step needs an image, its own or the
//     top-level default (see ParseImageRef for the accepted forms).
//   - timeout uses Go duration syntax ("90s", "10m", "1h30m"), > 0.
//   - memory is a byte count or a size with a unit (see ParseSize:
//     "512Mi" and "1GiB" are binary, "1G" and "1GB" decimal); cpus is a
//     number from 0.01 to 1024; pids a positive integer.
//   - env keys match ^[A-Za-z_][A-Za-z0-9_]*$; the proxy variables the
//     runner owns are refused (see ReservedEnv).
//   - egress.mode is enforce or audit; rule syntax is checked through
//     WithRuleCheck.
//   - artifacts are relative, contain no ".." element, and are valid
//     path.Match patterns ("**" allowed).
//
// Errors point at the offending value; unknown fields at their key;
// missing fields at the mapping that lacks them.
//
// YAML anchors, aliases and merge keys ("<<: *defaults") work as usual.
// Top-level keys starting with "x-" are ignored so that anchors shared by
// several steps have somewhere to live; they are the only unknown keys
// accepted. Files larger than MaxFileSize, nested more than 64 levels, with
// more than 1000 keys in one mapping, or expanding through aliases to more
// than about four million values are refused: the YAML parser's cost grows
// steeply with those, and the file comes from the repository being built.
package pipeline

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Defaults applied to steps that do not set a value. They are generous
// enough for a typical compile-and-test step and bounded so that a runaway
// build cannot take the host down.
const (
	DefaultTimeout     = 30 * time.Minute
	DefaultMemoryBytes = 2 << 30 // 2 GiB
	DefaultCPUs        = 2.0
	DefaultPids        = 1024
)

// Egress modes.
const (
	// EgressEnforce denies every request the allowlist does not allow.
	EgressEnforce = "enforce"
	// EgressAudit allows everything but records what enforce would deny;
	// it is for discovering the allowlist a build needs.
	EgressAudit = "audit"
)

// Egress cache settings (egress.cache).
const (
	// EgressCacheRecord keeps every downloaded body in the runner's
	// content-addressed store (the default).
	EgressCacheRecord = "record"
	// EgressCachePrefer also answers immutable URLs (module versions,
	// package tarballs) from the store without asking upstream.
	EgressCachePrefer = "prefer"
	// EgressCacheOff neither keeps nor serves bodies.
	EgressCacheOff = "off"
)

// MaxFileSize bounds the pipeline file. A real pipeline is a few KiB; the
// bound keeps a wrong path (a build output, a disk image) from being read
// into memory whole.
const MaxFileSize = 1 << 20

// Pipeline is a validated pipeline file with defaults applied.
type Pipeline struct {
	// Path is the path given to Load or the name given to Parse.
	Path string
	// Dir is the directory relative archive paths are resolved against:
	// the absolute directory of the file for Load, filepath.Dir(name) for
	// Parse.
	Dir string
	// Version is the file format version; always 1.
	Version int
	// Image is the default image reference as written; "" if every step
	// names its own.
	Image string
	// Runtime is the OCI runtime of every step ("runc", "crun", "runsc");
	// "" leaves it to the runner (--runtime, or its default, runc). An
	// administrator's policy may force another.
	Runtime string
	// Env is set in every step; a step's own Env overrides it key by key.
	Env map[string]string
	// Egress is the default egress policy for steps that do not set
	// egress.allow themselves. Mode is always set (default "enforce").
	Egress Egress
	// Services run beside every step that does not list its own (see
	// Pipeline.StepServices).
	Services []Service
	Steps    []Step
	// Artifacts are globs relative to the workspace ("**" matches any
	// number of directories); the runner matches and signs them.
	Artifacts []string
	Sign      Sign
	// Digest is the hex sha256 of the file's bytes, for provenance.
	Digest string

	positions map[string]Pos
	// source is the file's content, for the linter: to place a finding on
	// the line inside a multi-line value, and to read suppression comments.
	source []byte
}

// Runtimes are the values of the runtime field.
var Runtimes = []string{"runc", "crun", "runsc"}

// Pos is a place in the pipeline file.
type Pos struct{ Line, Column int }

// Position returns where a field was written ("steps[1].timeout",
// "egress.allow[0]", "steps[0].env.TOKEN", "steps[2]"), and whether it was
// written at all: the linter uses it both to point at a value and to tell
// a default from an explicit setting.
func (p *Pipeline) Position(field string) (Pos, bool) {
	pos, ok := p.positions[field]
	return pos, ok
}

// Egress is an egress policy.
type Egress struct {
	// Allow is the list of allow rules as written. Rule syntax belongs to
	// the egress package; see WithRuleCheck.
	Allow []string
	// Set reports whether "allow" was written, so that a step's
	// "allow: []" (no egress at all) can be told from a step that says
	// nothing (inherit the pipeline default). When Set, Allow is non-nil.
	Set bool
	// Mode is "enforce", "audit", or "" in a step that inherits the
	// pipeline's mode.
	Mode string
	// Inspect turns TLS inspection on or off (egress.inspect); nil
	// inherits (a step) or means off (the pipeline).
	Inspect *bool
	// Cache is "record", "prefer", "off", or "" to inherit (default
	// record).
	Cache string
}

// Step is one build step.
type Step struct {
	// Name is unique in the pipeline and matches ^[a-z0-9][a-z0-9_.-]{0,62}$,
	// so it can be used in container ids, file names and log prefixes.
	Name string
	// Image is the step's own image reference as written; "" means the
	// pipeline default (use Pipeline.StepImage).
	Image string
	// Run is the script, passed as is to /bin/sh -e -c.
	Run string
	// Env is the step's own environment (see Pipeline.StepEnv).
	Env map[string]string
	// Egress is nil when the step has no "egress" key. When it has one,
	// Egress.Set tells whether it replaces the allowlist and Egress.Mode
	// whether it replaces the mode (see Pipeline.StepAllow and
	// Pipeline.StepEgressMode).
	Egress *Egress
	// Services are the step's own services; when ServicesSet they replace
	// the pipeline's (an empty list: none).
	Services    []Service
	ServicesSet bool
	// Timeout is always positive (default DefaultTimeout).
	Timeout   time.Duration
	Resources Resources
	// Line is the line the step starts on, for messages about it.
	Line int
}

// Resources are a step's limits; every field is positive after Parse.
type Resources struct {
	MemoryBytes int64
	CPUs        float64
	Pids        int64
}

// Sign configures signing of the provenance and artifacts.
type Sign struct {
	// Keyless selects Sigstore keyless signing instead of a key pair.
	Keyless bool
}

// Option configures Parse and Load.
type Option func(*options)

type options struct {
	ruleCheck func(string) error
}

// WithRuleCheck has every egress allow rule checked by check. The rule
// grammar lives with the proxy that enforces it; this hook lets its errors
// be reported with the position of the rule in the file. Without it, rules
// are only checked to be non-empty strings.
func WithRuleCheck(check func(rule string) error) Option {
	return func(o *options) { o.ruleCheck = check }
}

// Load reads and parses the pipeline file at path. Errors about the
// content are an ErrorList; an error reading the file is returned as is.
func Load(path string, opts ...Option) (*Pipeline, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	p, err := Parse(path, data, opts...)
	if err != nil {
		return nil, err
	}
	if abs, err := filepath.Abs(p.Dir); err == nil {
		p.Dir = abs
	}
	return p, nil
}

// Parse parses and validates a pipeline file's content; name is used in
// error messages and as Pipeline.Path. On failure it returns a nil
// Pipeline and an ErrorList with every problem found.
func Parse(name string, data []byte, opts ...Option) (*Pipeline, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	sum := sha256.Sum256(data)
	p := &Pipeline{
		Path:   name,
		Dir:    filepath.Dir(name),
		Digest: hex.EncodeToString(sum[:]),
	}
	if errs := decode(name, data, o, p); len(errs) > 0 {
		return nil, errs
	}
	p.applyDefaults()
	p.source = data
	return p, nil
}

// applyDefaults fills what the file left out. It runs after validation so
// that validation sees exactly what was written.
func (p *Pipeline) applyDefaults() {
	if p.Egress.Mode == "" {
		p.Egress.Mode = EgressEnforce
	}
	for i := range p.Steps {
		s := &p.Steps[i]
		if s.Timeout == 0 {
			s.Timeout = DefaultTimeout
		}
		if s.Resources.MemoryBytes == 0 {
			s.Resources.MemoryBytes = DefaultMemoryBytes
		}
		if s.Resources.CPUs == 0 {
			s.Resources.CPUs = DefaultCPUs
		}
		if s.Resources.Pids == 0 {
			s.Resources.Pids = DefaultPids
		}
		serviceDefaults(s.Services)
	}
	serviceDefaults(p.Services)
}

// StepImage returns the image reference the step runs in, as written: the
// step's own or the pipeline default.
func (p *Pipeline) StepImage(s Step) string {
	if s.Image != "" {
		return s.Image
	}
	return p.Image
}

// StepImageRef returns the parsed image reference the step runs in, with a
// relative archive path resolved against the pipeline's directory.
func (p *Pipeline) StepImageRef(s Step) ImageRef {
	ref, err := ParseImageRef(p.StepImage(s))
	if err != nil {
		// Parse validated every reference; this is a Pipeline built by hand.
		panic(fmt.Sprintf("pipeline: step %q: %v", s.Name, err))
	}
	return ref.Resolve(p.Dir)
}

// StepAllow returns the step's effective egress allowlist: the step's own
// when it sets egress.allow, otherwise the pipeline default. The result is
// never nil and is a copy the caller may modify; empty means no egress.
func (p *Pipeline) StepAllow(s Step) []string {
	allow := p.Egress.Allow
	if s.Egress != nil && s.Egress.Set {
		allow = s.Egress.Allow
	}
	return append([]string{}, allow...)
}

// StepInspect reports whether the step's HTTPS is inspected
// (egress.inspect of the step, else of the pipeline; default false).
func (p *Pipeline) StepInspect(s Step) bool {
	if s.Egress != nil && s.Egress.Inspect != nil {
		return *s.Egress.Inspect
	}
	return p.Egress.Inspect != nil && *p.Egress.Inspect
}

// StepCache returns the step's effective egress.cache setting.
func (p *Pipeline) StepCache(s Step) string {
	if s.Egress != nil && s.Egress.Cache != "" {
		return s.Egress.Cache
	}
	if p.Egress.Cache != "" {
		return p.Egress.Cache
	}
	return EgressCacheRecord
}

// StepEgressMode returns the step's effective egress mode.
func (p *Pipeline) StepEgressMode(s Step) string {
	if s.Egress != nil && s.Egress.Mode != "" {
		return s.Egress.Mode
	}
	if p.Egress.Mode != "" {
		return p.Egress.Mode
	}
	return EgressEnforce
}

// StepEnv returns the environment the pipeline gives the step, as sorted
// "KEY=VALUE" strings: the pipeline's env overridden by the step's. The
// runner adds its own variables (the proxies) on top.
func (p *Pipeline) StepEnv(s Step) []string {
	env := make(map[string]string, len(p.Env)+len(s.Env))
	for k, v := range p.Env {
		env[k] = v
	}
	for k, v := range s.Env {
		env[k] = v
	}
	return SortedEnv(env)
}

// Select returns the named steps in pipeline order (the order on the
// command line does not matter, and a name given twice runs once). No
// names selects every step. An unknown name is an error that lists the
// valid ones.
func (p *Pipeline) Select(names []string) ([]Step, error) {
	if len(names) == 0 {
		return slices.Clone(p.Steps), nil
	}
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	var out []Step
	for _, s := range p.Steps {
		if want[s.Name] {
			out = append(out, s)
			delete(want, s.Name)
		}
	}
	if len(want) > 0 {
		var unknown, valid []string
		for _, n := range names {
			if want[n] {
				unknown = append(unknown, fmt.Sprintf("%q", n))
				want[n] = false
			}
		}
		for _, s := range p.Steps {
			valid = append(valid, s.Name)
		}
		word := "step"
		if len(unknown) > 1 {
			word = "steps"
		}
		return nil, fmt.Errorf("unknown %s %s in %s; the steps are: %s",
			word, strings.Join(unknown, ", "), p.Path, strings.Join(valid, ", "))
	}
	return out, nil
}

// SortedEnv returns env as "KEY=VALUE" strings sorted by key, so that the
// environment a step sees (and what provenance records) does not depend
// on map iteration order.
func SortedEnv(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	slices.SortFunc(out, func(a, b string) int {
		ka, _, _ := strings.Cut(a, "=")
		kb, _, _ := strings.Cut(b, "=")
		return strings.Compare(ka, kb)
	})
	return out
}
