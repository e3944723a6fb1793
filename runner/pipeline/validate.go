package pipeline

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/cleanroom-ci/cleanroom/internal/glob"
)

// This file holds the rules about values, each with a message that says
// what is wrong and what is accepted, and the checks that span steps.

// stepNameRE: step names become parts of container ids (containerd allows
// [A-Za-z0-9_.-]), file names and log prefixes, so they are kept short,
// lower-case and free of anything a shell or a path would interpret.
var stepNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

func checkStepName(name string) error {
	if stepNameRE.MatchString(name) {
		return nil
	}
	return fmt.Errorf("invalid step name %q: use 1 to 63 lower-case letters, digits, '_', '.' or '-', starting with a letter or digit (names become parts of container ids and log prefixes)", name)
}

func checkRun(run string) error {
	switch {
	case strings.TrimSpace(run) == "":
		return errors.New("empty; give the shell commands the step runs, e.g. run: make test")
	case strings.IndexByte(run, 0) >= 0:
		return errors.New("contains a NUL byte, which cannot be passed to /bin/sh")
	}
	return nil
}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// reservedEnv are the variables the runner sets in every step so that all
// network access goes through its egress proxy and every Go module fetch
// through its recording module proxy. A pipeline that set them would
// either be overridden silently or bypass the recording. PATH, GOFLAGS and
// the rest are the pipeline's own business. Matching ignores case, since
// tools disagree on whether http_proxy or HTTP_PROXY wins.
var reservedEnv = map[string]bool{
	"HTTP_PROXY": true, "HTTPS_PROXY": true, "NO_PROXY": true, "ALL_PROXY": true,
	"GOPROXY": true, "GOSUMDB": true, "GONOSUMDB": true, "GONOSUMCHECK": true,
}

// ReservedEnv reports whether the runner owns the variable name, so that
// the runner can apply the same rule to variables from other sources.
func ReservedEnv(name string) bool { return reservedEnv[strings.ToUpper(name)] }

func checkEnvName(name string) error {
	if !envNameRE.MatchString(name) {
		return fmt.Errorf("invalid variable name %q: use letters, digits and '_', not starting with a digit", name)
	}
	if ReservedEnv(name) {
		return fmt.Errorf("%s is reserved: the runner sets HTTP_PROXY, HTTPS_PROXY, NO_PROXY, ALL_PROXY (in either case), GOPROXY, GOSUMDB, GONOSUMDB and GONOSUMCHECK to send all traffic through its egress proxy; remove it and list the hosts the step needs under egress.allow", name)
	}
	return nil
}

// checkRule checks an egress rule: non-empty here, and whatever the
// WithRuleCheck hook says about its syntax.
func checkRule(rule string, check func(string) error) error {
	if strings.TrimSpace(rule) == "" {
		return errors.New("empty rule; write a host (example.org), a suffix (*.example.org), host:port or an IP/CIDR")
	}
	if check != nil {
		return check(rule)
	}
	return nil
}

func checkEgressMode(mode string) error {
	if mode == EgressEnforce || mode == EgressAudit {
		return nil
	}
	return fmt.Errorf("invalid mode %q: use enforce (deny what is not allowed) or audit (allow everything, record what would be denied)", mode)
}

func checkEgressCache(c string) error {
	if c == EgressCacheRecord || c == EgressCachePrefer || c == EgressCacheOff {
		return nil
	}
	return fmt.Errorf("invalid cache %q: use record (keep every download in the store), prefer (also answer immutable URLs from it) or off", c)
}

// checkCPUs: cgroup v2 cannot enforce a quota below 1ms per 100ms period,
// hence the lower bound; the upper one catches unit mix-ups (millicores).
func checkCPUs(v float64) error {
	if v >= 0.01 && v <= 1024 {
		return nil
	}
	return fmt.Errorf("must be a number of CPUs between 0.01 and 1024 (fractions allowed, e.g. 1.5); got %s", strconv.FormatFloat(v, 'g', -1, 64))
}

var bareNumberRE = regexp.MustCompile(`^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)$`)

// parseDuration accepts Go duration syntax ("90s", "10m", "1h30m") and
// requires a positive value.
func parseDuration(s string) (time.Duration, error) {
	const help = "use a number with a unit (ms, s, m, h), e.g. 90s, 10m or 1h30m"
	if bareNumberRE.MatchString(s) {
		return 0, fmt.Errorf("invalid duration %q: add a unit, e.g. %ss or %sm", s, s, s)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: %s", s, help)
	}
	if v <= 0 {
		return 0, fmt.Errorf("invalid duration %q: must be greater than zero", s)
	}
	return v, nil
}

// checkArtifact checks an artifact glob. Matching happens elsewhere; here
// the pattern must stay inside the workspace and be well formed
// (internal/glob, the dialect runner/manifest matches with).
func checkArtifact(pat string) error {
	switch {
	case strings.TrimSpace(pat) == "":
		return errors.New(`empty pattern; write a path or glob relative to the workspace, e.g. out/app or out/**/*.tar.gz`)
	case strings.HasPrefix(pat, "/"):
		return fmt.Errorf("%q is absolute; artifacts are relative to the workspace, e.g. %q", pat, strings.TrimLeft(pat, "/"))
	case strings.IndexByte(pat, 0) >= 0:
		return errors.New("contains a NUL byte")
	}
	for _, elem := range strings.Split(pat, "/") {
		if elem == ".." {
			return fmt.Errorf("%q contains \"..\"; artifacts must be inside the workspace", pat)
		}
	}
	if _, err := glob.Compile(pat); err != nil {
		return fmt.Errorf("invalid glob %q: check the [ ] classes and \\ escapes (syntax of Go's path.Match, plus ** for any number of directories)", pat)
	}
	return nil
}

// checkNamesUnique reports every step whose name an earlier step already
// uses: names select steps on the command line and key logs and results.
func (d *decoder) checkNamesUnique(steps []Step, infos []stepInfo) {
	first := map[string]int{}
	for i, s := range steps {
		if infos[i].nameNode == nil {
			continue
		}
		if j, dup := first[s.Name]; dup {
			line, _ := position(infos[j].node)
			d.errorf(infos[i].nameNode, join(infos[i].field, "name"), "duplicate step name %q; %s (line %d) already uses it", s.Name, infos[j].field, line)
			continue
		}
		first[s.Name] = i
	}
}

// checkStepImages is run when the pipeline has no default image: then
// every step must name its own.
func (d *decoder) checkStepImages(steps []Step, infos []stepInfo) {
	for i := range steps {
		if !infos[i].imageWritten {
			d.errorf(infos[i].node, join(infos[i].field, "image"), "missing; set image on this step or a default image at the top level (e.g. image: oci-archive:./images/builder.tar)")
		}
	}
}
