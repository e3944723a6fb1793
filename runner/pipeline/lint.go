package pipeline

import (
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Finding is one lint warning: an insecure or fragile set-up that the
// runner still accepts. Each has a stable ID, says what is wrong in one
// line, how to fix it, and where the documentation explains it.
type Finding struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	File    string `json:"file"`
	Line    int    `json:"line"`
	Column  int    `json:"column"`
	Field   string `json:"field"`
	Message string `json:"message"`
	Fix     string `json:"fix"`
	DocURL  string `json:"docs"`
}

func (f Finding) String() string {
	return fmt.Sprintf("%s:%d:%d: %s %s: %s (fix: %s; see %s)", f.File, f.Line, f.Column, f.ID, f.Name, f.Message, f.Fix, f.DocURL)
}

// LintOptions adjust the linter.
type LintOptions struct {
	// UserContentHosts replaces DefaultUserContentHosts when non-nil.
	UserContentHosts []string
	// Disabled rule IDs or names.
	Disabled []string
	// Release marks the pipeline as producing a release, which makes the
	// audit egress mode a finding even without artifacts declared.
	Release bool
	// EgressMode and ExtraAllow are the CLI's --egress-mode and --allow,
	// linted like the pipeline's own settings.
	EgressMode string
	ExtraAllow []string
}

// DocsBase is where each rule is explained; a rule's anchor is its ID.
const DocsBase = "docs/lint.md#"

// Rule is one lint rule.
type Rule struct {
	ID, Name, Summary, Fix string
	check                  func(*linter)
}

// Rules lists every rule, in ID order.
func Rules() []Rule { return rules }

// DefaultUserContentHosts are hosts that serve arbitrary content uploaded
// by anyone: allowing them lets a compromised build fetch a second stage or
// exfiltrate through an "innocent" host. Override with
// LintOptions.UserContentHosts (the CLI's --user-content-hosts).
var DefaultUserContentHosts = []string{
	"pastebin.com", "*.pastebin.com", "paste.ee", "hastebin.com", "ghostbin.co", "dpaste.com", "termbin.com",
	"gist.github.com", "gist.githubusercontent.com", "raw.githubusercontent.com", "objects.githubusercontent.com",
	"gitlab.com/snippets", "bitbucket.org/snippets",
	"transfer.sh", "file.io", "0x0.st", "temp.sh", "catbox.moe", "*.catbox.moe",
	"*.ngrok.io", "*.ngrok-free.app", "*.trycloudflare.com", "*.loca.lt", "*.serveo.net",
	"webhook.site", "*.requestbin.com", "*.pipedream.net", "*.interact.sh", "*.oast.fun", "*.burpcollaborator.net",
	"cdn.discordapp.com", "discord.com", "api.telegram.org", "hooks.slack.com",
	"drive.google.com", "docs.google.com", "dropbox.com", "*.dropboxusercontent.com",
	"*.s3.amazonaws.com", "storage.googleapis.com", "*.blob.core.windows.net", "*.r2.dev",
}

var rules = []Rule{
	{"CR000", "bad-suppression", "a `# cleanroom-lint: ignore=` comment names no known rule, so it suppresses nothing",
		"name the rule by id or name: # cleanroom-lint: ignore=CR012 (see the rule list in docs/lint.md)", nil}, // check set in init: it reads rules
	{"CR001", "image-not-pinned", "a registry image is referenced by tag, not by digest: the tag can be moved to other content",
		"pin it: name@sha256:<digest> (cleanroom prints the digest it resolved in the summary and provenance)", lintImagePinned},
	{"CR002", "broad-wildcard", "an egress wildcard covers a whole top-level or public suffix: anyone can register a name under it",
		"list the hosts the build needs, or a wildcard under a domain you trust (*.pkg.example.org)", lintBroadWildcard},
	{"CR003", "wide-cidr", "an egress CIDR rule is wider than /24 (IPv4) or /48 (IPv6)",
		"allow the exact addresses or a narrow range", lintWideCIDR},
	{"CR004", "user-content-host", "egress is allowed to a host that serves content anyone can upload (paste sites, raw file hosts, tunnels, webhooks)",
		"vendor what the build needs, or fetch it from a mirror you control", lintUserContent},
	{"CR005", "fetch-and-execute", "a script downloads code and executes it in one go (curl … | sh), with no integrity check",
		"download to a file, check its sha256 against a pinned value, then run it", lintFetchExecute},
	{"CR006", "secret-in-env", "a variable that looks like a secret is set in the pipeline file, which is committed with the source (and the runner does not expand $VARIABLES)",
		"remove it from cleanroom.yaml and pass it at run time with `cleanroom run --secret NAME` (the value comes from the runner's environment and is masked in logs)", lintSecretEnv},
	{"CR007", "no-timeout", "a step has no explicit timeout and gets the default (30m): a hung or abused step holds a runner that long",
		"set timeout: to the longest the step should ever need", lintNoTimeout},
	{"CR008", "audit-in-release", "egress mode audit allows hosts that are not on the allowlist (it only records them); a pipeline that produces release artifacts must enforce its allowlist",
		"use egress.mode: enforce (audit is for discovering an allowlist)", lintAuditRelease},
	{"CR009", "internal-ip-egress", "an IP or CIDR egress rule opens loopback, private or link-local addresses (internal services, the cloud metadata endpoint)",
		"allow internal services by exact address and port only, and only if the build must reach them", lintInternalIP},
	{"CR010", "latest-tag", "an image uses the implicit or explicit latest tag: what runs changes without any change to the pipeline",
		"use a versioned tag, better a digest", lintLatestTag},
	{"CR011", "tls-verification-off", "TLS or checksum verification is disabled (curl -k, --no-check-certificate, GIT_SSL_NO_VERIFY, GOINSECURE, NODE_TLS_REJECT_UNAUTHORIZED=0 …)",
		"keep verification on; trust a private CA by adding its certificate instead", lintTLSOff},
	{"CR012", "plain-http-fetch", "a script fetches over plain http:// from a non-loopback host: anyone on the path can change the bytes",
		"use https://, or verify a pinned sha256 of what you fetch", lintPlainHTTP},
	{"CR013", "service-not-awaited", "a service has no readiness check: the step starts as soon as the service's process does, and its first connections may be refused",
		"add ready: {port: PORT} (or ready: {command: [...]}) to the service", lintServiceReady},
}

func lintServiceReady(l *linter) {
	l.services(func(field string, s Service) {
		if s.Ready.Port == 0 && len(s.Ready.Command) == 0 {
			l.report(field, s.Alias)
		}
	})
}

func init() { rules[0].check = lintSuppressions }

type linter struct {
	p        *Pipeline
	opts     LintOptions
	findings []Finding
	rule     Rule
	supp     []suppression // lint_place.go
}

// Lint checks a parsed pipeline for insecure set-ups. Findings are warnings:
// the runner accepts the pipeline; `--strict` turns them into errors.
func Lint(p *Pipeline, opts LintOptions) []Finding {
	l := &linter{p: p, opts: opts}
	disabled := map[string]bool{}
	for _, d := range opts.Disabled {
		disabled[d] = true
	}
	for _, r := range rules {
		if disabled[r.ID] || disabled[r.Name] {
			continue
		}
		l.rule = r
		r.check(l)
	}
	sort.SliceStable(l.findings, func(i, j int) bool {
		a, b := l.findings[i], l.findings[j]
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		if a.Column != b.Column {
			return a.Column < b.Column
		}
		return a.ID < b.ID
	})
	return l.findings
}

// report adds a finding at field's position; detail is appended to the
// rule's summary.
func (l *linter) report(field, detail string) {
	pos, ok := l.p.Position(field)
	if !ok {
		// Defaults (no explicit field) point at the step or the top.
		pos = Pos{Line: 1, Column: 1}
		if i := strings.Index(field, "]"); strings.HasPrefix(field, "steps[") && i > 0 {
			if sp, ok := l.p.Position(field[:i+1]); ok {
				pos = sp
			}
		}
	}
	l.reportAt(field, pos, detail)
}

// reportMatch adds a finding for script[start:end], where script is the
// value of field, at the line and column of the match in the file.
func (l *linter) reportMatch(field, script string, start, end int) {
	l.reportAt(field, l.matchPos(field, script, start, end), strings.TrimSpace(script[start:end]))
}

// reportAt adds a finding at pos unless an ignore comment covers it.
func (l *linter) reportAt(field string, pos Pos, detail string) {
	if l.rule.ID != "CR000" && l.suppressed(l.rule, pos.Line) {
		return
	}
	msg := l.rule.Summary
	if detail != "" {
		msg += ": " + detail
	}
	l.findings = append(l.findings, Finding{
		ID: l.rule.ID, Name: l.rule.Name, File: l.p.Path, Line: pos.Line, Column: pos.Column,
		Field: field, Message: msg, Fix: l.rule.Fix, DocURL: DocsBase + strings.ToLower(l.rule.ID),
	})
}

// images yields each image reference with its field.
func (l *linter) images(fn func(field string, ref ImageRef)) {
	if l.p.Image != "" {
		if r, err := ParseImageRef(l.p.Image); err == nil {
			fn("image", r)
		}
	}
	for i, s := range l.p.Steps {
		if s.Image != "" {
			if r, err := ParseImageRef(s.Image); err == nil {
				fn(fmt.Sprintf("steps[%d].image", i), r)
			}
		}
	}
	l.services(func(field string, s Service) {
		if r, err := ParseImageRef(s.Image); err == nil {
			fn(field+".image", r)
		}
	})
}

// services yields every service (the pipeline's and the steps') with its
// field.
func (l *linter) services(fn func(field string, s Service)) {
	for i, s := range l.p.Services {
		fn(fmt.Sprintf("services[%d]", i), s)
	}
	for i, st := range l.p.Steps {
		for j, s := range st.Services {
			fn(fmt.Sprintf("steps[%d].services[%d]", i, j), s)
		}
	}
}

// allowRules yields every egress rule with its field.
func (l *linter) allowRules(fn func(field, rule string)) {
	for i, r := range l.p.Egress.Allow {
		fn(fmt.Sprintf("egress.allow[%d]", i), r)
	}
	for i, s := range l.p.Steps {
		if s.Egress != nil {
			for j, r := range s.Egress.Allow {
				fn(fmt.Sprintf("steps[%d].egress.allow[%d]", i, j), r)
			}
		}
	}
	l.services(func(field string, s Service) {
		for j, r := range s.Allow {
			fn(fmt.Sprintf("%s.egress.allow[%d]", field, j), r)
		}
	})
	for _, r := range l.opts.ExtraAllow {
		fn("--allow", r)
	}
}

// scripts yields each step's script with its field.
func (l *linter) scripts(fn func(field, script string)) {
	for i, s := range l.p.Steps {
		fn(fmt.Sprintf("steps[%d].run", i), s.Run)
	}
}

// envs yields every env entry with its field.
func (l *linter) envs(fn func(field, key, value string)) {
	for _, k := range sortedKeys(l.p.Env) {
		fn("env."+k, k, l.p.Env[k])
	}
	for i, s := range l.p.Steps {
		for _, k := range sortedKeys(s.Env) {
			fn(fmt.Sprintf("steps[%d].env.%s", i, k), k, s.Env[k])
		}
	}
	l.services(func(field string, s Service) {
		for _, k := range sortedKeys(s.Env) {
			fn(field+".env."+k, k, s.Env[k])
		}
	})
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func lintImagePinned(l *linter) {
	l.images(func(field string, r ImageRef) {
		if r.Kind == Registry && !r.Pinned() {
			l.report(field, r.Ref)
		}
	})
}

func lintLatestTag(l *linter) {
	l.images(func(field string, r ImageRef) {
		if r.Kind == Registry && !r.Pinned() && (r.Tag == "" || r.Tag == "latest") {
			l.report(field, r.Ref)
		}
	})
}

// ruleHostPort splits an egress rule into host part and port ("" if none).
func ruleHostPort(rule string) (string, string) {
	rule = strings.TrimSpace(rule)
	if strings.HasPrefix(rule, "[") {
		if i := strings.Index(rule, "]"); i > 0 {
			host, rest := rule[1:i], rule[i+1:]
			return host, strings.TrimPrefix(rest, ":")
		}
	}
	if strings.Count(rule, ":") == 1 {
		h, p, _ := strings.Cut(rule, ":")
		return h, p
	}
	return rule, ""
}

func lintBroadWildcard(l *linter) {
	l.allowRules(func(field, rule string) {
		host, _ := ruleHostPort(rule)
		suffix, ok := strings.CutPrefix(strings.ToLower(strings.TrimSuffix(host, ".")), "*.")
		if !ok {
			return
		}
		labels := strings.Split(suffix, ".")
		// One label (a TLD) or two short labels (co.uk, com.au: public
		// suffixes anyone can register under).
		if len(labels) == 1 || (len(labels) == 2 && len(labels[0]) <= 3 && len(labels[1]) == 2) {
			l.report(field, rule)
		}
	})
}

func rulePrefix(rule string) (netip.Prefix, bool) {
	host, _ := ruleHostPort(rule)
	if pfx, err := netip.ParsePrefix(host); err == nil {
		return pfx.Masked(), true
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), true
	}
	return netip.Prefix{}, false
}

func lintWideCIDR(l *linter) {
	l.allowRules(func(field, rule string) {
		pfx, ok := rulePrefix(rule)
		if !ok {
			return
		}
		if (pfx.Addr().Is4() && pfx.Bits() < 24) || (pfx.Addr().Is6() && pfx.Bits() < 48) {
			l.report(field, rule)
		}
	})
}

func lintInternalIP(l *linter) {
	l.allowRules(func(field, rule string) {
		pfx, ok := rulePrefix(rule)
		if !ok {
			return
		}
		a := pfx.Addr().Unmap()
		if a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsUnspecified() ||
			netip.MustParsePrefix("100.64.0.0/10").Contains(a) || pfx.Contains(netip.MustParseAddr("169.254.169.254")) {
			l.report(field, rule)
		}
	})
}

func hostMatches(pattern, host string) bool {
	pattern, host = strings.ToLower(pattern), strings.ToLower(host)
	if suffix, ok := strings.CutPrefix(pattern, "*."); ok {
		return host == suffix || strings.HasSuffix(host, "."+suffix)
	}
	pattern, _, _ = strings.Cut(pattern, "/")
	return host == pattern
}

func lintUserContent(l *linter) {
	hosts := DefaultUserContentHosts
	if l.opts.UserContentHosts != nil {
		hosts = l.opts.UserContentHosts
	}
	l.allowRules(func(field, rule string) {
		host, _ := ruleHostPort(rule)
		host = strings.TrimSuffix(strings.ToLower(host), ".")
		probe := strings.TrimPrefix(host, "*.")
		for _, h := range hosts {
			base := strings.TrimPrefix(strings.SplitN(h, "/", 2)[0], "*.")
			if hostMatches(h, probe) || (strings.HasPrefix(host, "*.") && hostMatches("*."+probe, base)) {
				l.report(field, fmt.Sprintf("%s (matches %s)", rule, h))
				return
			}
		}
	})
}

var (
	fetchExecRE = []*regexp.Regexp{
		regexp.MustCompile(`\b(curl|wget|fetch)\b[^|;&\n]*\|\s*(sudo\s+)?(ba|z|k|da)?sh\b`),
		regexp.MustCompile(`\b(curl|wget)\b[^|;&\n]*\|\s*(sudo\s+)?(python3?|perl|ruby|node|php)\b`),
		regexp.MustCompile(`(ba|z)?sh\s+<\(\s*(curl|wget)\b`),
		regexp.MustCompile(`(ba|z)?sh\s+-c\s+["']?\$\(\s*(curl|wget)\b`),
		regexp.MustCompile(`\b(source|\.)\s+<\(\s*(curl|wget)\b`),
		regexp.MustCompile(`\beval\s+["']?\$\(\s*(curl|wget)\b`),
	}
	tlsOffRE = []*regexp.Regexp{
		regexp.MustCompile(`\bcurl\b[^\n]*\s(-k|--insecure)\b`),
		regexp.MustCompile(`--no-check-certificate\b`),
		regexp.MustCompile(`\bGIT_SSL_NO_VERIFY=`),
		regexp.MustCompile(`http\.sslVerify[= ]+false`),
		regexp.MustCompile(`\bNODE_TLS_REJECT_UNAUTHORIZED=0\b`),
		regexp.MustCompile(`strict-ssl[= ]+false`),
		regexp.MustCompile(`--trusted-host\b`),
		regexp.MustCompile(`\bGOINSECURE=|\bGONOSUMCHECK=|\bGOFLAGS=[^\n]*-insecure\b|\bGOSUMDB=off\b`),
		regexp.MustCompile(`--allow-unauthenticated\b|AllowUnauthenticated\s+"?true`),
	}
	plainHTTPRE = regexp.MustCompile(`\bhttp://([A-Za-z0-9.\-\[\]:]+)`)
	secretKeyRE = regexp.MustCompile(`(?i)(^|_)(token|secret|passw(or)?d|passphrase|api_?key|private_?key|credentials?|auth)($|_)`)
	secretValRE = regexp.MustCompile(`^(ghp_|gho_|ghs_|github_pat_|glpat-|xox[baprs]-|AKIA[0-9A-Z]{16}|sk-[A-Za-z0-9]{20,}|-----BEGIN)`)
)

func lintFetchExecute(l *linter) {
	l.scripts(func(field, script string) {
		for _, m := range scriptMatches(script, fetchExecRE) {
			l.reportMatch(field, script, m[0], m[1])
		}
	})
}

func lintTLSOff(l *linter) {
	l.scripts(func(field, script string) {
		for _, m := range scriptMatches(script, tlsOffRE) {
			l.reportMatch(field, script, m[0], m[1])
		}
	})
	insecureEnv := map[string]func(string) bool{
		"GIT_SSL_NO_VERIFY":            func(v string) bool { return v != "" && v != "0" && v != "false" },
		"NODE_TLS_REJECT_UNAUTHORIZED": func(v string) bool { return v == "0" },
		"GOINSECURE":                   func(v string) bool { return v != "" },
		"GOFLAGS":                      func(v string) bool { return strings.Contains(v, "-insecure") },
		"PIP_TRUSTED_HOST":             func(v string) bool { return v != "" },
		"NPM_CONFIG_STRICT_SSL":        func(v string) bool { return strings.EqualFold(v, "false") },
		"PYTHONHTTPSVERIFY":            func(v string) bool { return v == "0" },
	}
	l.envs(func(field, key, value string) {
		if bad, ok := insecureEnv[strings.ToUpper(key)]; ok && bad(value) {
			l.report(field, key+"="+value)
		}
	})
}

func lintPlainHTTP(l *linter) {
	l.scripts(func(field, script string) {
		for _, m := range plainHTTPRE.FindAllStringSubmatchIndex(script, -1) {
			host := script[m[2]:m[3]]
			if h, _, err := splitHostPortLoose(host); err == nil {
				host = h
			}
			if host == "localhost" || strings.HasPrefix(host, "127.") || host == "[::1]" || host == "::1" {
				continue
			}
			l.reportMatch(field, script, m[0], m[1])
		}
	})
}

func splitHostPortLoose(s string) (string, string, error) {
	if i := strings.LastIndex(s, ":"); i > 0 && !strings.HasSuffix(s, "]") {
		if _, err := strconv.Atoi(s[i+1:]); err == nil {
			return strings.Trim(s[:i], "[]"), s[i+1:], nil
		}
	}
	return strings.Trim(s, "[]"), "", nil
}

func lintSecretEnv(l *linter) {
	l.envs(func(field, key, value string) {
		if value == "" {
			return
		}
		if secretKeyRE.MatchString(key) || secretValRE.MatchString(value) {
			l.report(field, key)
		}
	})
}

func lintNoTimeout(l *linter) {
	for i, s := range l.p.Steps {
		field := fmt.Sprintf("steps[%d].timeout", i)
		if _, ok := l.p.Position(field); !ok {
			l.report(field, "step "+s.Name)
		}
	}
}

func lintAuditRelease(l *linter) {
	release := l.opts.Release || len(l.p.Artifacts) > 0
	if !release {
		return
	}
	if l.opts.EgressMode == EgressAudit {
		l.report("--egress-mode", "--egress-mode audit")
	}
	if l.p.Egress.Mode == EgressAudit {
		l.report("egress.mode", "egress.mode: audit")
	}
	for i, s := range l.p.Steps {
		if s.Egress != nil && s.Egress.Mode == EgressAudit {
			l.report(fmt.Sprintf("steps[%d].egress.mode", i), "step "+s.Name)
		}
	}
}
