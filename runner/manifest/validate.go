package manifest

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode"
)

// maxExactInt is the largest integer a JSON number survives as exactly: the
// predicate is a protobuf Struct, whose numbers are float64.
const maxExactInt = 1 << 53

var (
	flagNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	commitRE   = regexp.MustCompile(`^[0-9a-f]{40}$`)
)

// isSHA256Hex reports whether s is a sha256 digest as the statement records
// it: exactly 64 lowercase hex characters. Upper case is refused rather than
// folded so that one artifact never has two spellings.
func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// hasControl reports whether s contains a control character or is not
// printable on one line; such values would make the statement hard to read
// and could smuggle layout into reports.
func hasControl(s string) bool {
	for _, r := range s {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return true
		}
	}
	return false
}

// problems collects every validation failure so that one Build call reports
// all of them, not just the first.
type problems []error

func (p *problems) addf(format string, args ...any) {
	*p = append(*p, fmt.Errorf(format, args...))
}

func (p problems) err() error {
	if len(p) == 0 {
		return nil
	}
	return fmt.Errorf("manifest: invalid input: %w", errors.Join(p...))
}

// text checks a required single-line string.
func (p *problems) text(field, v string) {
	switch {
	case v == "":
		p.addf("%s is empty", field)
	case hasControl(v):
		p.addf("%s %q contains control characters", field, v)
	}
}

func (p *problems) digest(field, v string) {
	if !isSHA256Hex(v) {
		p.addf("%s %q is not 64 lowercase hex characters", field, v)
	}
}

func (p *problems) optionalDigest(field, v string) {
	if v != "" {
		p.digest(field, v)
	}
}

func (p *problems) count(field string, v int64) {
	if v < 0 || v > maxExactInt {
		p.addf("%s %d is out of range", field, v)
	}
}

// validate checks in, whose BuilderID has already been defaulted.
func validate(in *Input) error {
	var p problems
	p.builderID(in.BuilderID)
	p.text("InvocationID", in.InvocationID)
	p.text("RunnerVersion", in.RunnerVersion)
	p.times(in)
	p.text("Pipeline.Path", in.Pipeline.Path)
	p.digest("Pipeline.SHA256", in.Pipeline.SHA256)
	p.steps(in.Steps)
	p.flags(in.Flags)
	p.source(in.Source)
	p.images(in.Images)
	p.dependencies(in.Dependencies)
	p.denied(in.Denied)
	p.egress(in.Egress)
	p.subjects(in.Subjects, in.FailedStep)
	p.byproducts(in.Byproducts)
	p.environment(in.Environment)
	if in.FailedStep != "" {
		p.text("FailedStep", in.FailedStep)
	}
	return p.err()
}

func (p *problems) builderID(id string) {
	u, err := url.Parse(id)
	if err != nil || u.Scheme == "" || u.Host == "" || hasControl(id) || strings.ContainsAny(id, " \t") {
		p.addf("BuilderID %q is not an absolute URI", id)
	}
}

func (p *problems) times(in *Input) {
	switch {
	case in.StartedOn.IsZero():
		p.addf("StartedOn is zero")
	case in.FinishedOn.IsZero():
		p.addf("FinishedOn is zero")
	case in.FinishedOn.Before(in.StartedOn):
		p.addf("FinishedOn %s is before StartedOn %s", in.FinishedOn, in.StartedOn)
	}
}

func (p *problems) steps(steps []string) {
	if len(steps) == 0 {
		p.addf("Steps is empty")
	}
	seen := map[string]bool{}
	for i, s := range steps {
		p.text(fmt.Sprintf("Steps[%d]", i), s)
		if seen[s] {
			p.addf("step %q selected twice", s)
		}
		seen[s] = true
	}
}

// flags refuses values containing "=": recorded flags select steps and
// egress, and a KEY=VALUE pair is how a secret would slip in.
func (p *problems) flags(flags map[string][]string) {
	for _, name := range sortedKeys(flags) {
		values := flags[name]
		if !flagNameRE.MatchString(name) {
			p.addf("flag name %q must be lowercase letters, digits and dashes, without leading dashes", name)
		}
		for i, v := range values {
			p.text(fmt.Sprintf("flag %s[%d]", name, i), v)
			if strings.Contains(v, "=") {
				p.addf("flag %s value %q contains '=': only non-secret, build-affecting values may be recorded", name, v)
			}
		}
	}
}

func (p *problems) source(s Source) {
	if s.Commit == "" && s.TreeSHA256 == "" {
		p.addf("Source needs a Commit or a TreeSHA256")
	}
	if s.Commit != "" && !commitRE.MatchString(s.Commit) {
		p.addf("Source.Commit %q is not 40 lowercase hex characters", s.Commit)
	}
	if (s.Remote != "" || s.Ref != "") && s.Commit == "" {
		p.addf("Source.Remote/Ref given without Source.Commit")
	}
	if s.Remote != "" {
		if _, err := gitRemoteURI(s.Remote); err != nil {
			p.addf("Source.Remote: %v", err)
		}
	}
	if s.Ref != "" {
		p.text("Source.Ref", s.Ref)
		if strings.ContainsAny(s.Ref, " @") {
			p.addf("Source.Ref %q contains a space or '@'", s.Ref)
		}
	}
	p.optionalDigest("Source.TreeSHA256", s.TreeSHA256)
}

func (p *problems) images(images []Image) {
	for i, im := range images {
		f := fmt.Sprintf("Images[%d]", i)
		p.text(f+".Step", im.Step)
		p.text(f+".Ref", im.Ref)
		if im.Service != "" {
			p.text(f+".Service", im.Service)
		}
		p.digest(f+".Digest", strings.TrimPrefix(im.Digest, "sha256:"))
	}
}

func (p *problems) dependencies(deps []Dependency) {
	for i, d := range deps {
		f := fmt.Sprintf("Dependencies[%d]", i)
		p.text(f+".Step", d.Step)
		if _, _, err := dependencyURI(d.URL); err != nil {
			p.addf("%s.URL: %v", f, err)
		}
		p.optionalDigest(f+".SHA256", d.SHA256)
		p.count(f+".Size", d.Size)
		p.count(f+".BytesIn", d.BytesIn)
		p.count(f+".BytesOut", d.BytesOut)
		for _, kv := range [][2]string{{"Method", d.Method}, {"Module", d.Module}, {"Version", d.Version}} {
			if hasControl(kv[1]) {
				p.addf("%s.%s %q contains control characters", f, kv[0], kv[1])
			}
		}
	}
}

func (p *problems) denied(denied []Denied) {
	for i, d := range denied {
		f := fmt.Sprintf("Denied[%d]", i)
		p.text(f+".Step", d.Step)
		p.text(f+".Host", d.Host)
		if d.Port < 0 || d.Port > 65535 {
			p.addf("%s.Port %d is out of range", f, d.Port)
		}
		if hasControl(d.Reason) {
			p.addf("%s.Reason %q contains control characters", f, d.Reason)
		}
		if d.Count < 1 || d.Count > maxExactInt {
			p.addf("%s.Count %d must be at least 1", f, d.Count)
		}
	}
}

func (p *problems) egress(egress map[string][]string) {
	for _, step := range sortedKeys(egress) {
		allow := egress[step]
		p.text("Egress step", step)
		for i, a := range allow {
			p.text(fmt.Sprintf("Egress[%s][%d]", step, i), a)
		}
	}
}

func (p *problems) subjects(subjects []Subject, failedStep string) {
	if failedStep != "" && len(subjects) > 0 {
		p.addf("run failed at step %q but %d subjects were given: a failed run attests no artifacts", failedStep, len(subjects))
	}
	seen := map[string]bool{}
	for i, s := range subjects {
		f := fmt.Sprintf("Subjects[%d]", i)
		p.text(f+".Name", s.Name)
		p.digest(f+".SHA256", s.SHA256)
		if seen[s.Name] {
			p.addf("subject %q given twice", s.Name)
		}
		seen[s.Name] = true
	}
}

func (p *problems) byproducts(bs []Byproduct) {
	seen := map[string]bool{}
	for i, b := range bs {
		f := fmt.Sprintf("Byproducts[%d]", i)
		p.text(f+".Name", b.Name)
		p.digest(f+".SHA256", b.SHA256)
		p.count(f+".Size", b.Size)
		if seen[b.Name] {
			p.addf("byproduct %q given twice", b.Name)
		}
		seen[b.Name] = true
	}
}

// environment accepts names only: a "=" means a value was passed, and the
// statement must never carry values (they may be secrets).
func (p *problems) environment(names []string) {
	for i, n := range names {
		f := fmt.Sprintf("Environment[%d]", i)
		switch {
		case strings.Contains(n, "="):
			p.addf("%s contains '=': only variable names may be recorded, never values", f)
		case n == "" || hasControl(n) || strings.ContainsAny(n, " \t"):
			p.addf("%s %q is not a variable name", f, n)
		}
	}
}

// exactNumber reports whether a JSON number survives the float64 of a
// protobuf Struct unchanged, so that Marshal never silently rounds.
func exactNumber(n string) bool {
	f, err := strconv.ParseFloat(n, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return false
	}
	if i, err := strconv.ParseInt(n, 10, 64); err == nil {
		return float64(i) == f && (i <= maxExactInt && i >= -maxExactInt)
	}
	if _, err := strconv.ParseUint(n, 10, 64); err == nil {
		return false // beyond int64, certainly beyond 2^53
	}
	return true // decimals and exponents: float64 is their meaning in JSON
}

// validHostPort checks the "host:port" form of an opaque tunnel.
func validHostPort(s string) bool {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n > 0 && n <= 65535
}
