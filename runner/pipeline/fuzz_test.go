package pipeline

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, that every error is a
// well-formed ErrorList, and that every pipeline it accepts satisfies the
// guarantees the runner relies on.
func FuzzParse(f *testing.F) {
	f.Add([]byte(fullExample))
	f.Add([]byte("version: 1\nimage: alpine\nsteps: [{name: a, run: b}]\n"))
	f.Add([]byte("version: 1\nimage: alpine\nx-d: &d {run: x, timeout: 1m}\nsteps: [{<<: *d, name: a}]\n"))
	f.Add([]byte(""))
	rejectSpaces := WithRuleCheck(func(rule string) error {
		if strings.ContainsAny(rule, " \t") {
			return errors.New("no spaces")
		}
		return nil
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("f.yaml", data, rejectSpaces)
		if err != nil {
			if p != nil {
				t.Fatalf("pipeline returned with error %v", err)
			}
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("error is %T %v; want a non-empty ErrorList", err, err)
			}
			for _, e := range list {
				if e.File != "f.yaml" || e.Line < 1 || e.Column < 1 || e.Msg == "" {
					t.Fatalf("malformed error %#v", e)
				}
				if strings.ContainsAny(e.Error(), "\n\r") {
					t.Fatalf("error spans lines: %q", e.Error())
				}
			}
			return
		}
		checkInvariants(t, p)
	})
}

func checkInvariants(t *testing.T, p *Pipeline) {
	t.Helper()
	if p.Version != 1 {
		t.Fatalf("Version = %d", p.Version)
	}
	if len(p.Steps) == 0 {
		t.Fatalf("no steps")
	}
	if p.Egress.Mode != EgressEnforce && p.Egress.Mode != EgressAudit {
		t.Fatalf("Egress.Mode = %q", p.Egress.Mode)
	}
	checkEnv := func(env map[string]string) {
		for k, v := range env {
			if checkEnvName(k) != nil || strings.IndexByte(v, 0) >= 0 {
				t.Fatalf("bad env %q=%q", k, v)
			}
		}
	}
	checkEnv(p.Env)
	seen := map[string]bool{}
	for _, s := range p.Steps {
		if checkStepName(s.Name) != nil || seen[s.Name] {
			t.Fatalf("bad or duplicate step name %q", s.Name)
		}
		seen[s.Name] = true
		if checkRun(s.Run) != nil {
			t.Fatalf("step %s: bad run %q", s.Name, s.Run)
		}
		if s.Timeout <= 0 || s.Resources.MemoryBytes <= 0 || s.Resources.Pids <= 0 || checkCPUs(s.Resources.CPUs) != nil {
			t.Fatalf("step %s: limits %v %+v", s.Name, s.Timeout, s.Resources)
		}
		if _, err := ParseImageRef(p.StepImage(s)); err != nil {
			t.Fatalf("step %s: image %q: %v", s.Name, p.StepImage(s), err)
		}
		_ = p.StepImageRef(s)
		checkEnv(s.Env)
		if s.Egress != nil && s.Egress.Set != (s.Egress.Allow != nil) {
			t.Fatalf("step %s: egress %+v", s.Name, s.Egress)
		}
		allow := p.StepAllow(s)
		if allow == nil {
			t.Fatalf("step %s: StepAllow is nil", s.Name)
		}
		for _, r := range allow {
			if strings.TrimSpace(r) == "" || strings.ContainsAny(r, " \t") {
				t.Fatalf("step %s: rule %q passed the checks", s.Name, r)
			}
		}
		if m := p.StepEgressMode(s); m != EgressEnforce && m != EgressAudit {
			t.Fatalf("step %s: mode %q", s.Name, m)
		}
	}
	for _, a := range p.Artifacts {
		if checkArtifact(a) != nil {
			t.Fatalf("artifact %q passed the checks", a)
		}
	}
	if _, err := p.Select([]string{p.Steps[0].Name}); err != nil {
		t.Fatalf("Select: %v", err)
	}
}
