package pipeline

import (
	"strings"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	valid := []struct {
		in   string
		want time.Duration
	}{
		{"90s", 90 * time.Second},
		{"10m", 10 * time.Minute},
		{"1h30m", 90 * time.Minute},
		{"1.5h", 90 * time.Minute},
		{"500ms", 500 * time.Millisecond},
		{"1ns", 1},
	}
	for _, tt := range valid {
		got, err := parseDuration(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	const help = ": use a number with a unit (ms, s, m, h), e.g. 90s, 10m or 1h30m"
	invalid := []struct{ in, want string }{
		{"10 minutes", `invalid duration "10 minutes"` + help},
		{"1d", `invalid duration "1d"` + help},
		{"", `invalid duration ""` + help},
		{"9999999h", `invalid duration "9999999h"` + help},
		{"90", `invalid duration "90": add a unit, e.g. 90s or 90m`},
		{"1.5", `invalid duration "1.5": add a unit, e.g. 1.5s or 1.5m`},
		{"0", `invalid duration "0": add a unit, e.g. 0s or 0m`},
		{"0s", `invalid duration "0s": must be greater than zero`},
		{"-1m", `invalid duration "-1m": must be greater than zero`},
	}
	for _, tt := range invalid {
		got, err := parseDuration(tt.in)
		if err == nil || err.Error() != tt.want {
			t.Errorf("parseDuration(%q) = %v, %v; want error %q", tt.in, got, err, tt.want)
		}
	}
}

func TestCheckStepName(t *testing.T) {
	for _, ok := range []string{"a", "0", "build", "go-1.26_test", strings.Repeat("a", 63)} {
		if err := checkStepName(ok); err != nil {
			t.Errorf("checkStepName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", ".a", "_a", "Build", "a b", "a/b", "a:b", "ä", strings.Repeat("a", 64)} {
		if err := checkStepName(bad); err == nil {
			t.Errorf("checkStepName(%q) succeeded", bad)
		}
	}
}

func TestCheckArtifact(t *testing.T) {
	for _, ok := range []string{"out/app", "out/*.tar.gz", "out/**", "**/*.whl", "dist/app-[0-9]*", "./out/app", "a..b/c", `out/\*literal`} {
		if err := checkArtifact(ok); err != nil {
			t.Errorf("checkArtifact(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", " ", "/out", "..", "../out", "out/..", "a/../b", "out/[", `out/\`, "a\x00b"} {
		if err := checkArtifact(bad); err == nil {
			t.Errorf("checkArtifact(%q) succeeded", bad)
		}
	}
}

func TestCheckCPUs(t *testing.T) {
	for _, ok := range []float64{0.01, 0.5, 1, 1.5, 1024} {
		if err := checkCPUs(ok); err != nil {
			t.Errorf("checkCPUs(%v) = %v", ok, err)
		}
	}
	for _, bad := range []float64{0, -1, 0.001, 1024.5} {
		if err := checkCPUs(bad); err == nil {
			t.Errorf("checkCPUs(%v) succeeded", bad)
		}
	}
}

func TestCheckEnvName(t *testing.T) {
	for _, ok := range []string{"A", "_", "a_b", "CGO_ENABLED", "PATH", "GOFLAGS", "x1"} {
		if err := checkEnvName(ok); err != nil {
			t.Errorf("checkEnvName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "1A", "A-B", "A B", "A=B", "É", "HTTP_PROXY", "all_proxy", "GONOSUMDB"} {
		if err := checkEnvName(bad); err == nil {
			t.Errorf("checkEnvName(%q) succeeded", bad)
		}
	}
}

func TestRuntimeField(t *testing.T) {
	p, err := Parse("cleanroom.yaml", []byte("version: 1\nimage: busybox\nruntime: runsc\nsteps: [{name: a, run: 'true'}]\n"))
	if err != nil || p.Runtime != "runsc" {
		t.Fatalf("runtime: runsc → %q, %v", p.Runtime, err)
	}
	_, err = Parse("cleanroom.yaml", []byte("version: 1\nimage: busybox\nruntime: kata\nsteps: [{name: a, run: 'true'}]\n"))
	if err == nil || !strings.Contains(err.Error(), "cleanroom.yaml:3") || !strings.Contains(err.Error(), `unknown runtime "kata"`) {
		t.Fatalf("runtime: kata → %v", err)
	}
}
