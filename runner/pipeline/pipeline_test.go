package pipeline

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const fullExample = `version: 1
image: oci-archive:./images/builder.tar   # default image
env: {CGO_ENABLED: "0"}
egress:
  allow: ["example-mirror.internal", "*.pkg.example.org:443"]
  mode: enforce
steps:
  - name: build
    image: registry.example.org:5000/team/go@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
    run: |
      go build -o out/app ./cmd/app
    env: {GOFLAGS: -trimpath}
    egress: {allow: []}
    timeout: 10m
    resources: {memory: 1GiB, cpus: 1.5, pids: 512}
  - name: test
    run: go test ./...
    egress:
      allow: [goproxy.example.org]
      mode: audit
artifacts: ["out/app", "out/**/*.tar.gz"]
sign: {keyless: true}
`

func mustParse(t *testing.T, in string, opts ...Option) *Pipeline {
	t.Helper()
	p, err := Parse("cleanroom.yaml", []byte(in), opts...)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

func TestParseFullExample(t *testing.T) {
	p := mustParse(t, fullExample)
	sum := sha256.Sum256([]byte(fullExample))
	want := &Pipeline{
		Path:    "cleanroom.yaml",
		Dir:     ".",
		Version: 1,
		Image:   "oci-archive:./images/builder.tar",
		Env:     map[string]string{"CGO_ENABLED": "0"},
		Egress: Egress{
			Allow: []string{"example-mirror.internal", "*.pkg.example.org:443"},
			Set:   true,
			Mode:  EgressEnforce,
		},
		Steps: []Step{
			{
				Name:      "build",
				Image:     "registry.example.org:5000/team/go@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
				Run:       "go build -o out/app ./cmd/app\n",
				Env:       map[string]string{"GOFLAGS": "-trimpath"},
				Egress:    &Egress{Allow: []string{}, Set: true},
				Timeout:   10 * time.Minute,
				Resources: Resources{MemoryBytes: 1 << 30, CPUs: 1.5, Pids: 512},
				Line:      8,
			},
			{
				Name:      "test",
				Run:       "go test ./...",
				Egress:    &Egress{Allow: []string{"goproxy.example.org"}, Set: true, Mode: EgressAudit},
				Timeout:   DefaultTimeout,
				Resources: Resources{MemoryBytes: DefaultMemoryBytes, CPUs: DefaultCPUs, Pids: DefaultPids},
				Line:      16,
			},
		},
		Artifacts: []string{"out/app", "out/**/*.tar.gz"},
		Sign:      Sign{Keyless: true},
		Digest:    hex.EncodeToString(sum[:]),
	}
	p.positions = nil // positions have their own test
	p.source = nil    // kept for the linter
	if !reflect.DeepEqual(p, want) {
		t.Errorf("Parse(full example)\ngot:  %+v\nwant: %+v", p, want)
		for i := range min(len(p.Steps), len(want.Steps)) {
			if !reflect.DeepEqual(p.Steps[i], want.Steps[i]) {
				t.Errorf("step %d\ngot:  %+v\nwant: %+v", i, p.Steps[i], want.Steps[i])
			}
		}
	}
}

func TestDefaults(t *testing.T) {
	p := mustParse(t, lines(
		"version: 1",
		"image: alpine",
		"steps:",
		"  - name: only",
		"    run: exit 0",
	))
	if p.Egress.Mode != EgressEnforce || p.Egress.Set || p.Egress.Allow != nil {
		t.Errorf("Egress = %+v; want enforce, not set, nil allow", p.Egress)
	}
	s := p.Steps[0]
	if s.Timeout != 30*time.Minute {
		t.Errorf("Timeout = %v; want 30m", s.Timeout)
	}
	want := Resources{MemoryBytes: 2 << 30, CPUs: 2, Pids: 1024}
	if s.Resources != want {
		t.Errorf("Resources = %+v; want %+v", s.Resources, want)
	}
	if s.Egress != nil || s.Env != nil || s.Image != "" {
		t.Errorf("unset step fields should stay empty: %+v", s)
	}
	if p.Artifacts != nil || p.Sign.Keyless || p.Env != nil {
		t.Errorf("unset pipeline fields should stay empty: %+v", p)
	}
	// Partly set resources keep what was written and default the rest.
	p = mustParse(t, lines(
		"version: 1",
		"image: alpine",
		"steps: [{name: a, run: b, resources: {cpus: 0.5}}]",
	))
	want = Resources{MemoryBytes: DefaultMemoryBytes, CPUs: 0.5, Pids: DefaultPids}
	if got := p.Steps[0].Resources; got != want {
		t.Errorf("Resources = %+v; want %+v", got, want)
	}
}

// TestEgressNilVersusEmpty checks that a step without egress.allow
// inherits the default while "allow: []" means no egress at all.
func TestEgressNilVersusEmpty(t *testing.T) {
	tests := []struct {
		name       string
		defaults   string // top-level egress line, or ""
		step       string // step egress flow mapping, or ""
		wantEgress *Egress
		wantAllow  []string
		wantMode   string
	}{
		{"no egress anywhere", "", "", nil, []string{}, EgressEnforce},
		{"inherit default", "egress: {allow: [a.example]}", "", nil, []string{"a.example"}, EgressEnforce},
		{"empty list replaces default", "egress: {allow: [a.example]}", "{allow: []}", &Egress{Allow: []string{}, Set: true}, []string{}, EgressEnforce},
		{"list replaces default", "egress: {allow: [a.example]}", "{allow: [b.example]}", &Egress{Allow: []string{"b.example"}, Set: true}, []string{"b.example"}, EgressEnforce},
		{"mode only inherits allow", "egress: {allow: [a.example]}", "{mode: audit}", &Egress{Mode: EgressAudit}, []string{"a.example"}, EgressAudit},
		{"empty mapping inherits all", "egress: {allow: [a.example], mode: audit}", "{}", &Egress{}, []string{"a.example"}, EgressAudit},
		{"default set to empty", "egress: {allow: []}", "", nil, []string{}, EgressEnforce},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stepEgress := ""
			if tt.step != "" {
				stepEgress = ", egress: " + tt.step
			}
			p := mustParse(t, lines(
				"version: 1",
				"image: alpine",
				tt.defaults,
				"steps: [{name: a, run: b"+stepEgress+"}]",
			))
			s := p.Steps[0]
			if !reflect.DeepEqual(s.Egress, tt.wantEgress) {
				t.Errorf("Step.Egress = %+v; want %+v", s.Egress, tt.wantEgress)
			}
			got := p.StepAllow(s)
			if got == nil || !reflect.DeepEqual(got, tt.wantAllow) {
				t.Errorf("StepAllow = %#v; want %#v (never nil)", got, tt.wantAllow)
			}
			if m := p.StepEgressMode(s); m != tt.wantMode {
				t.Errorf("StepEgressMode = %q; want %q", m, tt.wantMode)
			}
		})
	}
}

func TestStepAllowReturnsCopy(t *testing.T) {
	p := mustParse(t, lines(
		"version: 1",
		"image: alpine",
		"egress: {allow: [a.example]}",
		"steps: [{name: a, run: b}]",
	))
	got := p.StepAllow(p.Steps[0])
	got[0] = "changed"
	if p.Egress.Allow[0] != "a.example" {
		t.Errorf("modifying StepAllow's result changed the pipeline")
	}
	// A zero Step (nil Egress) on a zero Pipeline is fine too.
	if got := (&Pipeline{}).StepAllow(Step{}); got == nil || len(got) != 0 {
		t.Errorf("StepAllow on zero values = %#v; want empty, non-nil", got)
	}
}

func TestWithRuleCheckSeesEveryRule(t *testing.T) {
	var seen []string
	check := func(rule string) error {
		seen = append(seen, rule)
		return nil
	}
	mustParse(t, lines(
		"version: 1",
		"image: alpine",
		"egress: {allow: [a.example, '*.b.example:443']}",
		"steps: [{name: a, run: b, egress: {allow: [10.0.0.0/8]}}]",
	), WithRuleCheck(check))
	want := []string{"a.example", "*.b.example:443", "10.0.0.0/8"}
	if !reflect.DeepEqual(seen, want) {
		t.Errorf("rules checked = %q; want %q", seen, want)
	}
}

func TestEnv(t *testing.T) {
	p := mustParse(t, lines(
		"version: 1",
		"image: alpine",
		`env: {B: "1", A: x, PATH: /opt/bin:/usr/bin, GOFLAGS: -mod=vendor}`,
		"steps:",
		"  - name: a",
		"    run: b",
		`    env: {B: "2", C: !!str 0, D: '', E: "has=equals"}`,
	))
	got := p.StepEnv(p.Steps[0])
	want := []string{"A=x", "B=2", "C=0", "D=", "E=has=equals", "GOFLAGS=-mod=vendor", "PATH=/opt/bin:/usr/bin"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("StepEnv = %q; want %q", got, want)
	}
	if got := SortedEnv(nil); got == nil || len(got) != 0 {
		t.Errorf("SortedEnv(nil) = %#v; want empty", got)
	}
	// Sorting is by key: "A_B" sorts after "A" even though '=' < '_'.
	if got := SortedEnv(map[string]string{"A_B": "1", "A": "2"}); !reflect.DeepEqual(got, []string{"A=2", "A_B=1"}) {
		t.Errorf("SortedEnv = %q", got)
	}
	for name, want := range map[string]bool{"HTTP_PROXY": true, "http_proxy": true, "Https_Proxy": true, "GOSUMDB": true, "GONOSUMCHECK": true, "PATH": false, "GOFLAGS": false, "GOPRIVATE": false} {
		if got := ReservedEnv(name); got != want {
			t.Errorf("ReservedEnv(%q) = %v; want %v", name, got, want)
		}
	}
}

func TestStepImage(t *testing.T) {
	p := mustParse(t, lines(
		"version: 1",
		"image: oci-archive:./images/builder.tar",
		"steps:",
		"  - {name: a, run: b}",
		"  - {name: c, run: d, image: 'docker-archive:/abs/img.tar'}",
		"  - {name: e, run: f, image: golang:1.26}",
	))
	p.Dir = t.TempDir()
	tests := []struct {
		step    int
		written string
		ref     ImageRef
	}{
		{0, "oci-archive:./images/builder.tar", ImageRef{Kind: OCIArchive, Ref: filepath.Join(p.Dir, "images/builder.tar")}},
		{1, "docker-archive:/abs/img.tar", ImageRef{Kind: DockerArchive, Ref: "/abs/img.tar"}},
		{2, "golang:1.26", ImageRef{Kind: Registry, Ref: "golang:1.26", Name: "golang", Tag: "1.26"}},
	}
	for _, tt := range tests {
		s := p.Steps[tt.step]
		if got := p.StepImage(s); got != tt.written {
			t.Errorf("StepImage(%s) = %q; want %q", s.Name, got, tt.written)
		}
		if got := p.StepImageRef(s); got != tt.ref {
			t.Errorf("StepImageRef(%s) = %+v; want %+v", s.Name, got, tt.ref)
		}
	}
}

func TestSelect(t *testing.T) {
	p := mustParse(t, lines(
		"version: 1",
		"image: alpine",
		"steps:",
		"  - {name: fetch, run: a}",
		"  - {name: build, run: b}",
		"  - {name: test, run: c}",
	))
	names := func(steps []Step) []string {
		var out []string
		for _, s := range steps {
			out = append(out, s.Name)
		}
		return out
	}
	tests := []struct {
		in      []string
		want    []string
		wantErr string
	}{
		{nil, []string{"fetch", "build", "test"}, ""},
		{[]string{"test", "fetch"}, []string{"fetch", "test"}, ""},
		{[]string{"build", "build"}, []string{"build"}, ""},
		{[]string{"deploy"}, nil, `unknown step "deploy" in cleanroom.yaml; the steps are: fetch, build, test`},
		{[]string{"x", "build", "y", "x"}, nil, `unknown steps "x", "y" in cleanroom.yaml; the steps are: fetch, build, test`},
	}
	for _, tt := range tests {
		got, err := p.Select(tt.in)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("Select(%q) error = %v; want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(names(got), tt.want) {
			t.Errorf("Select(%q) = %q, %v; want %q", tt.in, names(got), err, tt.want)
		}
	}
	// The result is a copy.
	got, _ := p.Select(nil)
	got[0].Name = "changed"
	if p.Steps[0].Name != "fetch" {
		t.Errorf("modifying Select's result changed the pipeline")
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cleanroom.yaml")
	if err := os.WriteFile(path, []byte(fullExample), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	sum := sha256.Sum256([]byte(fullExample))
	if p.Path != path || p.Dir != dir || p.Digest != hex.EncodeToString(sum[:]) {
		t.Errorf("Load: Path %q Dir %q Digest %q", p.Path, p.Dir, p.Digest)
	}
	if got := p.StepImageRef(p.Steps[1]).Ref; got != filepath.Join(dir, "images/builder.tar") {
		t.Errorf("archive path resolved to %q", got)
	}

	// A relative path gives an absolute Dir, so that later changes of the
	// working directory do not move the archives.
	t.Chdir(dir)
	p, err = Load("cleanroom.yaml")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if p.Path != "cleanroom.yaml" || p.Dir != dir {
		t.Errorf("Load(relative): Path %q Dir %q; want Dir %q", p.Path, p.Dir, dir)
	}

	// Errors name the file as given.
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("version: 1\nsteps: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad)
	if want := bad + ":2:8: steps: empty; a pipeline needs at least one step"; err == nil || err.Error() != want {
		t.Errorf("Load(bad) = %v; want %q", err, want)
	}

	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) = %v; want a not-exist error", err)
	}
}

func TestAnchorsAndMergeKeys(t *testing.T) {
	p := mustParse(t, lines(
		"version: 1",
		"image: alpine",
		"x-common: &common",
		"  resources: {cpus: 4, memory: 4GiB}",
		"  timeout: 1h",
		"  env: &env {LANG: C.UTF-8}",
		"steps:",
		"  - <<: *common",
		"    name: build",
		"    run: make",
		"  - <<: *common",
		"    name: test",
		"    run: make test",
		"    timeout: 5m",
		"    env: {<<: *env, EXTRA: yes}",
	))
	b, tst := p.Steps[0], p.Steps[1]
	if b.Timeout != time.Hour || tst.Timeout != 5*time.Minute {
		t.Errorf("timeouts %v, %v; want merged 1h and own 5m", b.Timeout, tst.Timeout)
	}
	if b.Resources.CPUs != 4 || b.Resources.MemoryBytes != 4<<30 || tst.Resources.CPUs != 4 {
		t.Errorf("merged resources %+v, %+v", b.Resources, tst.Resources)
	}
	if !reflect.DeepEqual(tst.Env, map[string]string{"LANG": "C.UTF-8", "EXTRA": "yes"}) {
		t.Errorf("merged env = %v", tst.Env)
	}
}

func TestErrorFormat(t *testing.T) {
	e := &Error{File: "cleanroom.yaml", Line: 12, Column: 5, Field: "steps[1].timeout", Msg: `invalid duration "10 minutes"`}
	if got, want := e.Error(), `cleanroom.yaml:12:5: steps[1].timeout: invalid duration "10 minutes"`; got != want {
		t.Errorf("Error() = %q; want %q", got, want)
	}
	e2 := &Error{File: "f.yaml", Line: 1, Column: 1, Msg: "the file is empty"}
	if got, want := e2.Error(), "f.yaml:1:1: the file is empty"; got != want {
		t.Errorf("Error() without field = %q; want %q", got, want)
	}
	var err error = ErrorList{e, e2}
	if got, want := err.Error(), e.Error()+"\n"+e2.Error(); got != want {
		t.Errorf("ErrorList.Error() = %q; want %q", got, want)
	}
	var one *Error
	if !errors.As(err, &one) || one != e {
		t.Errorf("errors.As did not find the first *Error")
	}
}

func TestLimits(t *testing.T) {
	t.Run("file too large", func(t *testing.T) {
		in := "version: 1\n# " + strings.Repeat("x", MaxFileSize) + "\n"
		_, err := Parse("big.yaml", []byte(in))
		if want := "big.yaml:1:1: the file is larger than 1048576 bytes; is this really a pipeline file?"; err == nil || err.Error() != want {
			t.Errorf("got %v; want %q", err, want)
		}
	})
	t.Run("alias bomb", func(t *testing.T) {
		// Each level merges the previous one ten times: 10^9 visits if
		// expanded naively.
		var b strings.Builder
		b.WriteString("version: 1\nimage: alpine\nx-l0: &l0 {run: x}\n")
		for i := 1; i <= 9; i++ {
			b.WriteString("x-l" + string(rune('0'+i)) + ": &l" + string(rune('0'+i)) + " {<<: [")
			for j := range 10 {
				if j > 0 {
					b.WriteString(", ")
				}
				b.WriteString("*l" + string(rune('0'+i-1)))
			}
			b.WriteString("]}\n")
		}
		b.WriteString("steps: [{<<: *l9, name: a}]\n")
		start := time.Now()
		_, err := Parse("cleanroom.yaml", []byte(b.String()))
		if err == nil || !strings.Contains(err.Error(), "expands to more than 4194304 values through aliases and merge keys") {
			t.Errorf("got %v; want the expansion limit error", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("took %v", d)
		}
	})
	shape := []struct{ name, in, want string }{
		{"deep flow nesting", "version: 1\nx-a: " + strings.Repeat("[", 65) + strings.Repeat("]", 65) + "\n",
			"x.yaml:2:70: lists and mappings are nested more than 64 levels deep; a pipeline file this large or deep is not supported"},
		{"deep block nesting", "version: 1\nx-a:\n" + func() string {
			var b strings.Builder
			for i := range 64 {
				b.WriteString(strings.Repeat(" ", i+1) + "a:\n")
			}
			return b.String()
		}(), "x.yaml:66:65: lists and mappings are nested more than 64 levels deep; a pipeline file this large or deep is not supported"},
		{"nested lists on one line", "version: 1\nx-a:\n  " + strings.Repeat("- ", 64) + "a\n",
			"x.yaml:3:129: lists and mappings are nested more than 64 levels deep; a pipeline file this large or deep is not supported"},
		{"many block keys", "version: 1\nenv:\n" + func() string {
			var b strings.Builder
			for i := range 1001 {
				fmt.Fprintf(&b, "  K%d: v\n", i)
			}
			return b.String()
		}(), "x.yaml:1003:3: a mapping has more than 1000 keys; a pipeline file this large or deep is not supported"},
		{"many flow keys", "version: 1\nenv: {" + strings.Repeat("K: v, ", 1001) + "}\n",
			"x.yaml:2:6007: a mapping has more than 1000 keys; a pipeline file this large or deep is not supported"},
	}
	for _, tt := range shape {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("x.yaml", []byte(tt.in))
			if err == nil || err.Error() != tt.want {
				t.Errorf("got %v\nwant %s", err, tt.want)
			}
		})
	}
	t.Run("1000 keys are fine", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("version: 1\nimage: alpine\nsteps: [{name: a, run: b}]\nenv:\n")
		for i := range 1000 {
			fmt.Fprintf(&b, "  K%d: v\n", i)
		}
		p := mustParse(t, b.String())
		if len(p.Env) != 1000 {
			t.Errorf("len(Env) = %d", len(p.Env))
		}
	})
	t.Run("too many errors", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("version: 1\nimage: alpine\nsteps:\n")
		for range 150 {
			b.WriteString("  - name: X\n    run: make\n")
		}
		_, err := Parse("cleanroom.yaml", []byte(b.String()))
		var list ErrorList
		if !errors.As(err, &list) || len(list) != maxErrors+1 {
			t.Fatalf("got %d errors; want %d and a note", len(list), maxErrors+1)
		}
		if last := list[len(list)-1]; last.Msg != "too many errors; showing the first 100" || last.Line != list[len(list)-2].Line {
			t.Errorf("last error = %v", last)
		}
	})
}

func TestStringsAreExact(t *testing.T) {
	p := mustParse(t, lines(
		"version: 1",
		"image: alpine",
		"env:",
		`  A: "0"`,
		"  B: '1.5'",
		"  C: !!str true",
		"  D: yes",
		"  E: 0x10 is text",
		"steps:",
		"  - name: '007'",
		"    run: >-",
		"      make",
		"      all",
	))
	want := map[string]string{"A": "0", "B": "1.5", "C": "true", "D": "yes", "E": "0x10 is text"}
	if !reflect.DeepEqual(p.Env, want) {
		t.Errorf("Env = %q; want %q", p.Env, want)
	}
	if s := p.Steps[0]; s.Name != "007" || s.Run != "make all" {
		t.Errorf("step = %q %q", s.Name, s.Run)
	}
}

func TestYAMLDetails(t *testing.T) {
	t.Run("merge precedence", func(t *testing.T) {
		p := mustParse(t, lines(
			"version: 1",
			"image: alpine",
			"x-a: &a {run: from-a, timeout: 1m}",
			"x-b: &b {run: from-b, timeout: 2m, resources: {pids: 7}}",
			"steps:",
			"  - <<: [*a, *b]",
			"    name: s",
			"    timeout: 3m",
		))
		s := p.Steps[0]
		// Own keys beat merged ones; earlier merge sources beat later ones.
		if s.Run != "from-a" || s.Timeout != 3*time.Minute || s.Resources.Pids != 7 {
			t.Errorf("step = %+v", s)
		}
	})
	t.Run("extension keys are not validated", func(t *testing.T) {
		mustParse(t, lines(
			"version: 1",
			"image: alpine",
			"x-anything: {steps: 5, version: nine, 1: [c]}",
			"steps: [{name: a, run: b}]",
		))
	})
	t.Run("byte order mark and CRLF", func(t *testing.T) {
		p := mustParse(t, "\ufeffversion: 1\r\nimage: alpine\r\nsteps:\r\n  - name: a\r\n    run: |\r\n      make\r\n")
		if p.Steps[0].Run != "make\n" {
			t.Errorf("Run = %q", p.Steps[0].Run)
		}
	})
	t.Run("str tag", func(t *testing.T) {
		p := mustParse(t, lines(
			"version: 1",
			"image: alpine",
			"env:",
			"  B: !!str null",
			"  C: !!str 1.50",
			"  D: !!str |",
			"    text",
			"steps:",
			"  - name: a",
			"    run: b",
			"    env:",
			"      A: !!str", // go-yaml accepts an empty tagged value only last
		))
		want := map[string]string{"B": "null", "C": "1.50", "D": "text\n"}
		if a, ok := p.Steps[0].Env["A"]; !ok || a != "" {
			t.Errorf("!!str alone = %q, %v; want the empty string", a, ok)
		}
		if !reflect.DeepEqual(p.Env, want) {
			t.Errorf("Env = %q; want %q", p.Env, want)
		}
	})
	t.Run("numbers", func(t *testing.T) {
		p := mustParse(t, lines(
			"version: 1",
			"image: alpine",
			"steps: [{name: a, run: b, resources: {memory: 1073741824, cpus: 1e0, pids: 0x200}}]",
		))
		want := Resources{MemoryBytes: 1 << 30, CPUs: 1, Pids: 512}
		if got := p.Steps[0].Resources; got != want {
			t.Errorf("Resources = %+v; want %+v", got, want)
		}
	})
	t.Run("document markers", func(t *testing.T) {
		mustParse(t, "# comment\n---\nversion: 1\nimage: alpine\nsteps: [{name: a, run: b}]\n...\n")
	})
}
