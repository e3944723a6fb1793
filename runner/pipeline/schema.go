package pipeline

import (
	"slices"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"
)

// This file is the version 1 schema: which fields exist where, and what
// type each has. Rules about values live in validate.go.

var (
	topFields      = []string{"version", "image", "runtime", "env", "egress", "services", "steps", "artifacts", "sign"}
	stepFields     = []string{"name", "image", "run", "env", "egress", "services", "timeout", "resources"}
	egressFields   = []string{"allow", "mode", "inspect", "cache"}
	resourceFields = []string{"memory", "cpus", "pids"}
	signFields     = []string{"keyless"}
)

// stepInfo is what the cross-step checks need to know about a step beyond
// its value.
type stepInfo struct {
	field        string   // "steps[3]"
	node         ast.Node // the step's mapping
	nameNode     ast.Node // nil if the name is missing or invalid
	imageWritten bool     // an image key was present, valid or not
}

// pipeline reads the top level.
func (d *decoder) pipeline(root ast.Node, p *Pipeline) {
	entries, node, _ := d.mapping(root, "", "a mapping of fields (version: 1, steps: …)")
	if node == nil {
		return
	}
	// The version decides what the rest means, so check it first and stop
	// at an unknown one rather than report its fields as unknown.
	for _, e := range entries {
		if e.key != "version" {
			continue
		}
		v, vn, ok := d.integer(e.value, "version")
		if ok && v != 1 {
			d.errorf(vn, "version", "unsupported version %d; this cleanroom reads version 1", v)
			return
		}
		p.Version = int(v)
	}
	top := d.fields(entries, "", topFields, true)
	if _, ok := top["version"]; !ok {
		d.errorf(node, "version", "missing; add `version: 1` at the top of the file")
	}
	imageWritten := false
	if e, ok := top["image"]; ok {
		imageWritten = true
		p.Image = d.image(e.value, "image")
	}
	if e, ok := top["runtime"]; ok {
		if v, vn, ok := d.str(e.value, "runtime"); ok {
			if !slices.Contains(Runtimes, v) {
				d.errorf(vn, "runtime", "unknown runtime %q; want one of %s", v, strings.Join(Runtimes, ", "))
			} else {
				p.Runtime = v
			}
		}
	}
	if e, ok := top["env"]; ok {
		p.Env = d.env(e.value, "env")
	}
	if e, ok := top["egress"]; ok {
		p.Egress = d.egress(e.value, "egress")
	}
	if e, ok := top["services"]; ok {
		p.Services = d.services(e.value, "services")
	}
	var infos []stepInfo
	if e, ok := top["steps"]; ok {
		p.Steps, infos = d.steps(e.value, "steps")
	} else {
		d.errorf(node, "steps", "missing; a pipeline needs at least one step, e.g. steps: [{name: build, run: make}]")
	}
	if e, ok := top["artifacts"]; ok {
		p.Artifacts = d.artifacts(e.value, "artifacts")
	}
	if e, ok := top["sign"]; ok {
		p.Sign = d.sign(e.value, "sign")
	}
	d.checkNamesUnique(p.Steps, infos)
	if !imageWritten {
		d.checkStepImages(p.Steps, infos)
	}
}

// image reads and checks an image reference; "" if invalid.
func (d *decoder) image(n ast.Node, field string) string {
	s, node, ok := d.str(n, field)
	if !ok {
		return ""
	}
	if _, err := ParseImageRef(s); err != nil {
		d.errorf(node, field, "%v", err)
		return ""
	}
	return s
}

func (d *decoder) env(n ast.Node, field string) map[string]string {
	entries, node, _ := d.mapping(n, field, `a mapping of NAME: "value"`)
	if node == nil {
		return nil
	}
	env := make(map[string]string, len(entries))
	for _, e := range entries {
		f := join(field, e.key)
		if err := checkEnvName(e.key); err != nil {
			d.errorf(e.keyNode, f, "%v", err)
			continue
		}
		v, vn, ok := d.str(e.value, f)
		if !ok {
			continue
		}
		if strings.IndexByte(v, 0) >= 0 {
			d.errorf(vn, f, "contains a NUL byte, which an environment variable cannot hold")
			continue
		}
		env[e.key] = v
	}
	return env
}

func (d *decoder) egress(n ast.Node, field string) Egress {
	var eg Egress
	m, _ := d.object(n, field, "a mapping with allow, mode, inspect and cache", egressFields)
	if e, ok := m["allow"]; ok {
		eg.Allow, eg.Set = d.allowList(e.value, join(field, "allow"))
	}
	if e, ok := m["mode"]; ok {
		f := join(field, "mode")
		if mode, mn, ok := d.str(e.value, f); ok {
			if err := checkEgressMode(mode); err != nil {
				d.errorf(mn, f, "%v", err)
			} else {
				eg.Mode = mode
			}
		}
	}
	if e, ok := m["inspect"]; ok {
		if v, ok := d.boolean(e.value, join(field, "inspect")); ok {
			eg.Inspect = &v
		}
	}
	if e, ok := m["cache"]; ok {
		f := join(field, "cache")
		if c, cn, ok := d.str(e.value, f); ok {
			if err := checkEgressCache(c); err != nil {
				d.errorf(cn, f, "%v", err)
			} else {
				eg.Cache = c
			}
		}
	}
	return eg
}

// allowList reads egress.allow; set is false if it is not a list.
func (d *decoder) allowList(n ast.Node, f string) (allow []string, set bool) {
	items, _, ok := d.sequence(n, f, `a list of rules, e.g. ["goproxy.example.org"] ([] for no egress)`)
	if !ok {
		return nil, false
	}
	allow = make([]string, 0, len(items))
	for i, item := range items {
		fi := index(f, i)
		rule, rn, ok := d.str(item, fi)
		if !ok {
			continue
		}
		if err := checkRule(rule, d.opts.ruleCheck); err != nil {
			d.errorf(rn, fi, "%v", err)
			continue
		}
		allow = append(allow, rule)
	}
	return allow, true
}

func (d *decoder) steps(n ast.Node, field string) ([]Step, []stepInfo) {
	items, seq, ok := d.sequence(n, field, "a list of steps")
	if !ok {
		return nil, nil
	}
	if len(items) == 0 {
		d.errorf(seq, field, "empty; a pipeline needs at least one step")
		return nil, nil
	}
	steps := make([]Step, 0, len(items))
	infos := make([]stepInfo, 0, len(items))
	for i, item := range items {
		if s, info, ok := d.step(item, index(field, i)); ok {
			steps = append(steps, s)
			infos = append(infos, info)
		}
	}
	return steps, infos
}

// step reads one step; ok is false only if it is not a mapping at all.
func (d *decoder) step(n ast.Node, field string) (Step, stepInfo, bool) {
	m, node := d.object(n, field, "a mapping with at least name and run", stepFields)
	if node == nil {
		return Step{}, stepInfo{}, false
	}
	line, _ := position(node)
	s := Step{Line: line}
	info := stepInfo{field: field, node: node}
	if e, ok := m["name"]; ok {
		f := join(field, "name")
		if name, nn, ok := d.str(e.value, f); ok {
			if err := checkStepName(name); err != nil {
				d.errorf(nn, f, "%v", err)
			} else {
				s.Name, info.nameNode = name, nn
			}
		}
	} else {
		d.errorf(node, join(field, "name"), "missing; every step needs a name (lower-case letters, digits, '_', '.', '-')")
	}
	if e, ok := m["run"]; ok {
		f := join(field, "run")
		if run, rn, ok := d.str(e.value, f); ok {
			if err := checkRun(run); err != nil {
				d.errorf(rn, f, "%v", err)
			} else {
				s.Run = run
			}
		}
	} else {
		d.errorf(node, join(field, "run"), "missing; give the shell commands the step runs, e.g. run: make test")
	}
	if e, ok := m["image"]; ok {
		info.imageWritten = true
		s.Image = d.image(e.value, join(field, "image"))
	}
	if e, ok := m["env"]; ok {
		s.Env = d.env(e.value, join(field, "env"))
	}
	if e, ok := m["egress"]; ok {
		eg := d.egress(e.value, join(field, "egress"))
		s.Egress = &eg
	}
	if e, ok := m["services"]; ok {
		s.Services, s.ServicesSet = d.services(e.value, join(field, "services")), true
	}
	if e, ok := m["timeout"]; ok {
		s.Timeout = d.duration(e.value, join(field, "timeout"))
	}
	if e, ok := m["resources"]; ok {
		s.Resources = d.resources(e.value, join(field, "resources"))
	}
	return s, info, true
}

// duration reads a Go duration ("90s", "10m", "1h30m"); 0 if invalid.
func (d *decoder) duration(n ast.Node, field string) time.Duration {
	s, ok := d.scalar(n, field, "a duration such as 10m")
	if !ok {
		return 0
	}
	if s.kind != kindString && s.kind != kindInt && s.kind != kindFloat {
		d.errorf(s.node, field, "expected a duration such as 90s, 10m or 1h30m, got %s", s.describe())
		return 0
	}
	v, err := parseDuration(s.text)
	if err != nil {
		d.errorf(s.node, field, "%v", err)
		return 0
	}
	return v
}

func (d *decoder) resources(n ast.Node, field string) Resources {
	var r Resources
	m, _ := d.object(n, field, "a mapping with memory, cpus and pids", resourceFields)
	if e, ok := m["memory"]; ok {
		f := join(field, "memory")
		if s, ok := d.scalar(e.value, f, "a size such as 1GiB"); ok {
			if s.kind != kindString && s.kind != kindInt && s.kind != kindFloat {
				d.errorf(s.node, f, "expected a size such as 512MiB or 2GiB, got %s", s.describe())
			} else if v, err := ParseSize(s.text); err != nil {
				d.errorf(s.node, f, "%v", err)
			} else {
				r.MemoryBytes = v
			}
		}
	}
	if e, ok := m["cpus"]; ok {
		f := join(field, "cpus")
		if v, vn, ok := d.number(e.value, f); ok {
			if err := checkCPUs(v); err != nil {
				d.errorf(vn, f, "%v", err)
			} else {
				r.CPUs = v
			}
		}
	}
	if e, ok := m["pids"]; ok {
		f := join(field, "pids")
		if v, vn, ok := d.integer(e.value, f); ok {
			if v < 1 {
				d.errorf(vn, f, "must be a positive number of processes, e.g. 512; got %d", v)
			} else {
				r.Pids = v
			}
		}
	}
	return r
}

func (d *decoder) artifacts(n ast.Node, field string) []string {
	items, _, ok := d.sequence(n, field, `a list of globs relative to the workspace, e.g. ["out/app"]`)
	if !ok {
		return nil
	}
	out := make([]string, 0, len(items))
	for i, item := range items {
		f := index(field, i)
		pat, pn, ok := d.str(item, f)
		if !ok {
			continue
		}
		if err := checkArtifact(pat); err != nil {
			d.errorf(pn, f, "%v", err)
			continue
		}
		out = append(out, pat)
	}
	return out
}

func (d *decoder) sign(n ast.Node, field string) Sign {
	var s Sign
	m, _ := d.object(n, field, "a mapping with keyless", signFields)
	if e, ok := m["keyless"]; ok {
		s.Keyless, _ = d.boolean(e.value, join(field, "keyless"))
	}
	return s
}
