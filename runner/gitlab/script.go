package gitlab

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// gitlab-runner writes every job variable into every stage script, in
// clear text: `export KEY=VALUE` lines (file variables as `printf '%s'
// VALUE > "${CI_PROJECT_DIR}.tmp/KEY"` plus an export of that path), inside
// the argument of an `eval`. That argument is quoted one of three ways
// depending on the runner version and feature flags: ANSI-C ($'...',
// the default), POSIX double quotes (FF_POSIXLY_CORRECT_ESCAPES) or plain
// single quotes; and the eval sits in `: | eval ...` (older runners) or
// `(trap 'exit 1' TERM; eval ...) < /dev/null`.
//
// A sandbox can read the script it runs (it is a file in the sandbox), so
// anything runner-only must be cut from the text itself, not just from
// the environment: RewriteScript decodes each eval argument, removes the
// statements that set a runner-only variable, and quotes the result again
// (in single quotes, which every POSIX shell reads the same way). The
// script is otherwise treated as opaque, and as a last line of defence the
// result is searched for the secret values themselves: a script that
// would still carry one is refused rather than run.

// ErrSecretInScript is returned when a runner-only value survives the
// rewrite.
var ErrSecretInScript = errors.New("the stage script still contains the value of a runner-only variable after rewriting")

// ErrEnvFileInHelper is returned when a helper stage's script would
// still read the GITLAB_ENV file after rewriting.
var ErrEnvFileInHelper = errors.New("the helper stage script reads the GITLAB_ENV file in a way cleanroom does not recognise; it is not run, since that file is written by the job's own stages")

// RewriteScript removes the statements that set any of keys from a
// generated stage script, then checks that none of secretValues remains.
// Scripts without such statements are returned unchanged.
func RewriteScript(script string, keys, secretValues []string) (string, error) {
	return rewrite(script, keys, secretValues, false)
}

// RewriteHelperScript is RewriteScript for a stage that can reach GitLab
// (get_sources, cache, artifacts): besides the statements setting keys
// (there: every job variable the helper has no use for, see
// HelperVariableAllowed), it removes the loop that exports each line of
// the GITLAB_ENV file, which the job's own stages write. What a job
// defines or writes thus never becomes the helper's environment
// (GIT_CONFIG_*, GIT_SSH_COMMAND, PATH, LD_PRELOAD, BASH_ENV, …).
func RewriteHelperScript(script string, keys, secretValues []string) (string, error) {
	out, err := rewrite(script, keys, secretValues, true)
	if err != nil {
		return "", err
	}
	if strings.Contains(out, envFileLoop) {
		return "", ErrEnvFileInHelper
	}
	return out, nil
}

// envFileLoop is how gitlab-runner's bash writer reads GITLAB_ENV
// (SourceEnv): `while read -r line; do export "$line"; done < FILE`.
const envFileLoop = `do export "$line"; done`

func rewrite(script string, keys, secretValues []string, dropEnvFile bool) (string, error) {
	out := script
	if len(keys) > 0 || dropEnvFile {
		strip := func(code string) (string, bool) { return stripStatements(code, keys, dropEnvFile) }
		words := findEvalWords(script)
		if len(words) == 0 {
			// Not the usual shape: treat the whole script as the body.
			out, _ = strip(script)
		} else {
			var b strings.Builder
			last := 0
			for _, w := range words {
				body, changed := strip(w.body)
				if !changed {
					continue
				}
				b.WriteString(script[last:w.start])
				b.WriteString(singleQuote(body))
				last = w.end
			}
			b.WriteString(script[last:])
			out = b.String()
		}
	}
	for _, v := range secretValues {
		if containsSecret(out, v) {
			return "", ErrSecretInScript
		}
	}
	return out, nil
}

type evalWord struct {
	start, end int // the quoted argument's span in the script
	body       string
}

var evalRE = regexp.MustCompile(`(^|[\s;(|&])eval[ \t]+`)

// findEvalWords finds every `eval WORD` whose WORD is a static string (no
// expansions) and decodes it.
func findEvalWords(s string) []evalWord {
	var out []evalWord
	for _, m := range evalRE.FindAllStringIndex(s, -1) {
		start := m[1]
		if len(out) > 0 && start < out[len(out)-1].end {
			continue
		}
		body, end, ok := parseWord(s, start)
		if !ok || end == start {
			continue
		}
		out = append(out, evalWord{start: start, end: end, body: body})
	}
	return out
}

// stripStatements removes, from shell code, each line that starts a
// statement setting one of keys: `export KEY=WORD` (and `export KEY`) and
// the `printf '%s' WORD > "…/KEY"` that writes a file variable. The
// removal runs to the end of WORD and then of its line, so a value spread
// over several lines goes with it.
func stripStatements(code string, keys []string, dropEnvFile bool) (string, bool) {
	var b strings.Builder
	changed := false
	i := 0
	for i < len(code) {
		lineEnd := strings.IndexByte(code[i:], '\n')
		if lineEnd < 0 {
			lineEnd = len(code)
		} else {
			lineEnd += i
		}
		if end, ok := matchSecretStatement(code, i, keys); ok {
			changed = true
			i = end
			continue
		}
		if dropEnvFile && isEnvFileLoop(code[i:lineEnd]) {
			changed = true
			i = min(lineEnd+1, len(code))
			continue
		}
		next := min(lineEnd+1, len(code))
		b.WriteString(code[i:next])
		i = next
	}
	return b.String(), changed
}

// matchSecretStatement reports whether the line at i sets one of keys and
// where the statement (with its line) ends.
func matchSecretStatement(code string, i int, keys []string) (int, bool) {
	j := i
	for j < len(code) && (code[j] == ' ' || code[j] == '\t') {
		j++
	}
	rest := code[j:]
	switch {
	case strings.HasPrefix(rest, "export "):
		k := j + len("export ")
		for k < len(code) && code[k] == ' ' {
			k++
		}
		n := k
		for n < len(code) && isNameChar(code[n]) {
			n++
		}
		if n == k || !slices.Contains(keys, code[k:n]) {
			return 0, false
		}
		end := n
		if n < len(code) && code[n] == '=' {
			_, wend, _ := parseWord(code, n+1)
			end = wend
		} else if n < len(code) && code[n] != '\n' && code[n] != ' ' && code[n] != ';' {
			return 0, false
		}
		return lineEndAfter(code, end), true
	case strings.HasPrefix(rest, "printf '%s' "):
		k := j + len("printf '%s' ")
		_, wend, _ := parseWord(code, k)
		le := lineEndAfter(code, wend)
		tail := strings.TrimSpace(code[wend:le])
		target, ok := strings.CutPrefix(tail, ">")
		if !ok {
			return 0, false
		}
		target = strings.TrimSpace(target)
		if t, err := strconv.Unquote(target); err == nil {
			target = t
		}
		if slices.Contains(keys, path.Base(target)) {
			return le, true
		}
	}
	return 0, false
}

// isEnvFileLoop reports whether a line is the GITLAB_ENV loop.
func isEnvFileLoop(line string) bool {
	line = strings.TrimSpace(line)
	return strings.HasPrefix(line, "while read -r line; ") && strings.Contains(line, envFileLoop+" <")
}

// lineEndAfter returns the index just past the newline ending the line
// that contains position i (or the end of code).
func lineEndAfter(code string, i int) int {
	if i >= len(code) {
		return len(code)
	}
	nl := strings.IndexByte(code[i:], '\n')
	if nl < 0 {
		return len(code)
	}
	return i + nl + 1
}

func isNameChar(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// parseWord reads one shell word starting at s[i]: any concatenation of
// '…', $'…', "…" and unquoted characters with backslash escapes, up to an
// unquoted blank or operator. It returns the word's value, the index just
// past it, and ok=false when the value is not static (it contains an
// expansion) or a quote is not closed; end is then still the best guess.
func parseWord(s string, i int) (val string, end int, ok bool) {
	var b strings.Builder
	ok = true
	for i < len(s) {
		c := s[i]
		switch {
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return b.String(), len(s), false
			}
			b.WriteString(s[i+1 : i+1+j])
			i += j + 2
		case c == '$' && i+1 < len(s) && s[i+1] == '\'':
			v, n, closed := decodeANSIC(s[i+2:])
			b.WriteString(v)
			i += 2 + n
			if !closed {
				return b.String(), len(s), false
			}
		case c == '"':
			i++
			closed := false
			for i < len(s) {
				d := s[i]
				if d == '"' {
					closed = true
					i++
					break
				}
				if d == '\\' && i+1 < len(s) {
					switch s[i+1] {
					case '$', '`', '"', '\\':
						b.WriteByte(s[i+1])
						i += 2
						continue
					case '\n':
						i += 2
						continue
					}
				}
				if d == '$' || d == '`' {
					ok = false
				}
				b.WriteByte(d)
				i++
			}
			if !closed {
				return b.String(), len(s), false
			}
		case c == '\\':
			if i+1 < len(s) {
				if s[i+1] != '\n' {
					b.WriteByte(s[i+1])
				}
				i += 2
			} else {
				i++
			}
		case c == ' ' || c == '\t' || c == '\n' || strings.IndexByte(";&|()<>", c) >= 0:
			return b.String(), i, ok
		case c == '$' || c == '`':
			ok = false
			b.WriteByte(c)
			i++
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String(), i, ok
}

// decodeANSIC decodes the body of a $'…' string (s starts after the
// opening quote) as bash does. It returns the value, how many bytes of s
// it used including the closing quote, and whether the quote was closed.
func decodeANSIC(s string) (string, int, bool) {
	var b strings.Builder
	i := 0
	for i < len(s) {
		c := s[i]
		if c == '\'' {
			return b.String(), i + 1, true
		}
		if c != '\\' || i+1 >= len(s) {
			b.WriteByte(c)
			i++
			continue
		}
		e := s[i+1]
		i += 2
		switch e {
		case 'a':
			b.WriteByte('\a')
		case 'b':
			b.WriteByte('\b')
		case 'e', 'E':
			b.WriteByte(0x1b)
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'v':
			b.WriteByte('\v')
		case '\\', '\'', '"', '?':
			b.WriteByte(e)
		case 'x':
			n, used := hexPrefix(s[i:], 2)
			if used == 0 {
				b.WriteString(`\x`)
				continue
			}
			b.WriteByte(byte(n))
			i += used
		case 'u', 'U':
			width := 4
			if e == 'U' {
				width = 8
			}
			n, used := hexPrefix(s[i:], width)
			if used == 0 {
				b.WriteByte('\\')
				b.WriteByte(e)
				continue
			}
			b.WriteRune(rune(n))
			i += used
		case 'c':
			if i < len(s) {
				b.WriteByte(s[i] & 0x1f)
				i++
			}
		default:
			if e >= '0' && e <= '7' {
				n, used := int(e-'0'), 0
				for used < 2 && i+used < len(s) && s[i+used] >= '0' && s[i+used] <= '7' {
					n = n*8 + int(s[i+used]-'0')
					used++
				}
				b.WriteByte(byte(n))
				i += used
				continue
			}
			b.WriteByte('\\')
			b.WriteByte(e)
		}
	}
	return b.String(), len(s), false
}

func hexPrefix(s string, max int) (int, int) {
	n, used := 0, 0
	for used < max && used < len(s) {
		c := s[used]
		var d int
		switch {
		case c >= '0' && c <= '9':
			d = int(c - '0')
		case c >= 'a' && c <= 'f':
			d = int(c-'a') + 10
		case c >= 'A' && c <= 'F':
			d = int(c-'A') + 10
		default:
			return n, used
		}
		n = n*16 + d
		used++
	}
	return n, used
}

// singleQuote quotes s for any POSIX shell.
func singleQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// minSecretLen is the shortest value the leak check looks for: shorter
// ones would match by accident. Secrets (tokens, keys) are far longer.
const minSecretLen = 6

// minFragmentLen is the shortest run of a value that quoting leaves
// untouched which the check looks for on its own, for values quoting
// changes (those with quotes, spaces or non-ASCII characters).
const minFragmentLen = 12

// containsSecret reports whether text contains the value v, literally or
// as one of its long unquoted runs.
func containsSecret(text, v string) bool {
	if len(v) < minSecretLen {
		return false
	}
	if strings.Contains(text, v) {
		return true
	}
	for _, f := range strings.FieldsFunc(v, func(r rune) bool { return !isLiteralRune(r) }) {
		if len(f) >= minFragmentLen && strings.Contains(text, f) {
			return true
		}
	}
	return false
}

// isLiteralRune reports whether no quoting style gitlab-runner uses
// changes r.
func isLiteralRune(r rune) bool {
	return r < 0x80 && (isNameChar(byte(r)) || strings.ContainsRune(",-./@", r))
}

// Shells tried, in order, to run a stage script, as gitlab-runner's own
// Docker executor does: bash where the image has it, else a POSIX sh
// (GitLab's generated scripts are written to work under both).
var (
	bashPaths = []string{"/usr/local/bin/bash", "/usr/bin/bash", "/bin/bash"}
	shPaths   = []string{"/usr/local/bin/sh", "/usr/bin/sh", "/bin/sh", "/busybox/sh"}
)

// ShellArgs returns the argv that runs the script file at scriptPath in a
// sandbox. The script's shebang says which shell the runner generated it
// for (`#!/usr/bin/env bash`, or sh when the runner's shell is "sh"); a
// bash script falls back to sh in images without bash. The choice is made
// inside the sandbox by /bin/sh, since only the image knows what it has.
func ShellArgs(script []byte, scriptPath string) ([]string, error) {
	shell := shebangShell(script)
	var candidates []string
	switch shell {
	case "bash", "":
		candidates = append(append(candidates, bashPaths...), shPaths...)
	case "sh", "dash", "ash":
		candidates = shPaths
	case "pwsh", "powershell":
		return nil, fmt.Errorf("the stage script is for %s; cleanroom runs bash or sh scripts: set shell = \"bash\" in the runner's config.toml", shell)
	default:
		return nil, fmt.Errorf("the stage script asks for %q; cleanroom runs bash or sh scripts", shell)
	}
	var b strings.Builder
	b.WriteString("for s in")
	for _, c := range candidates {
		b.WriteString(" " + c)
	}
	b.WriteString(`; do if [ -x "$s" ]; then exec "$s" "$0"; fi; done; `)
	b.WriteString(`echo "cleanroom: the image has no shell to run the stage script (tried ` + strings.Join(candidates, " ") + `)" >&2; exit 127`)
	return []string{"/bin/sh", "-c", b.String(), scriptPath}, nil
}

// shebangShell returns the shell a script's #! line names ("" if none).
func shebangShell(script []byte) string {
	line, _, _ := strings.Cut(string(script), "\n")
	rest, ok := strings.CutPrefix(line, "#!")
	if !ok {
		return ""
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return ""
	}
	if path.Base(f[0]) == "env" {
		f = f[1:]
		for len(f) > 0 && strings.HasPrefix(f[0], "-") {
			f = f[1:]
		}
		if len(f) == 0 {
			return ""
		}
	}
	return path.Base(f[0])
}
