package pipeline

import (
	"encoding/json"
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
			checkErrors(t, p, err)
			return
		}
		checkInvariants(t, p)
	})
}

// FuzzParseFields complements FuzzParse: most mutations of whole files
// are YAML syntax errors, so this one keeps the structure valid and fuzzes
// the values, where the validators are.
func FuzzParseFields(f *testing.F) {
	f.Add("build", "golang:1.26", "make", "10m", "1GiB", "1.5", "512", "CGO_ENABLED", "0", "goproxy.example.org", "out/**", "enforce")
	f.Add("a.b_c-d", "oci-archive:./b.tar", "exit 0", "1h30m", "1073741824", "2", "0x10", "_", "", "*.example.org:443", "dist/*.tar.gz", "audit")
	f.Add("B", "docker://x", "", "90", "1gb", "0", "-1", "HTTP_PROXY", "x\x00", "bad rule", "/abs", "strict")
	f.Fuzz(func(t *testing.T, name, image, run, timeout, memory, cpus, pids, key, value, rule, artifact, mode string) {
		q := func(s string) string {
			b, _ := json.Marshal(s) // JSON strings are YAML double-quoted strings
			return string(b)
		}
		in := "version: 1\n" +
			"image: alpine\n" +
			"env: {" + q(key) + ": " + q(value) + "}\n" +
			"egress: {allow: [" + q(rule) + "], mode: " + q(mode) + "}\n" +
			"steps:\n" +
			"  - name: " + q(name) + "\n" +
			"    image: " + q(image) + "\n" +
			"    run: " + q(run) + "\n" +
			"    timeout: " + q(timeout) + "\n" +
			"    resources: {memory: " + q(memory) + ", cpus: " + cpus + ", pids: " + pids + "}\n" +
			"artifacts: [" + q(artifact) + "]\n"
		rejectSpaces := WithRuleCheck(func(rule string) error {
			if strings.ContainsAny(rule, " \t") {
				return errors.New("no spaces")
			}
			return nil
		})
		p, err := Parse("f.yaml", []byte(in), rejectSpaces)
		if err != nil {
			checkErrors(t, p, err)
			return
		}
		checkInvariants(t, p)
		// What YAML reads back: JSON turns invalid UTF-8 into U+FFFD.
		w := func(s string) string {
			var out string
			_ = json.Unmarshal([]byte(q(s)), &out)
			return out
		}
		s := p.Steps[0]
		if s.Name != w(name) || s.Image != w(image) || s.Run != w(run) || p.Env[w(key)] != w(value) ||
			p.Egress.Allow[0] != w(rule) || p.Egress.Mode != w(mode) || p.Artifacts[0] != w(artifact) {
			t.Fatalf("values changed on the way through: %+v %+v", p, s)
		}
	})
}

// checkErrors checks that a failed Parse returned a well-formed ErrorList.
func checkErrors(t *testing.T, p *Pipeline, err error) {
	t.Helper()
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
