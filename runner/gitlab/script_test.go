package gitlab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

type scriptVar struct {
	key, value string
	file       bool
}

const (
	testToken = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJzaWdzdG9yZSJ9.c2lnbmF0dXJl-Zm9yLXRlc3Q"
	// A runner-only file variable whose value quoting changes.
	testVault = "vault 's3cr3t' $NOT_EXPANDED\nsecond-line-of-the-vault-secret"
	// An ordinary variable that must survive intact.
	testFoo = "bar baz 'q' \"dq\" $HOME `x` \\ end\nsecond line"
)

func testVars(tmp string) []scriptVar {
	return []scriptVar{
		{key: "CI_JOB_ID", value: "4242"},
		{key: "SIGSTORE_ID_TOKEN", value: testToken},
		{key: "FOO", value: testFoo},
		{key: "VAULT_ID_TOKEN", value: testVault, file: true},
		{key: "AFTER", value: "after"},
	}
}

const testBody = `echo "SIGSTORE=${SIGSTORE_ID_TOKEN-unset}"
echo "VAULT=${VAULT_ID_TOKEN-unset}"
if [ -e "$TMPV/VAULT_ID_TOKEN" ]; then echo "VAULT FILE PRESENT"; fi
printf 'FOO=%s|\n' "$FOO"
echo "AFTER=$AFTER"
`

// The runner's three quoting styles for the eval argument and the inner
// values: ANSI-C (default), POSIX double quotes
// (FF_POSIXLY_CORRECT_ESCAPES), and plain single quotes as in the
// reference's examples.
type quoter func(string) string

func ansiCQuote(s string) string {
	var b strings.Builder
	quote := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isNameChar(c) || strings.IndexByte(",-./@", c) >= 0:
			b.WriteByte(c)
		case c == '\n':
			b.WriteString(`\n`)
			quote = true
		case c == '\'' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
			quote = true
		case c >= 0x20 && c < 0x7f:
			b.WriteByte(c)
			quote = true
		default:
			fmt.Fprintf(&b, `\x%02x`, c)
			quote = true
		}
	}
	if !quote {
		return b.String()
	}
	return "$'" + b.String() + "'"
}

func posixQuote(s string) string {
	var b strings.Builder
	quote := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case strings.IndexByte("`\"\\$", c) >= 0:
			b.WriteByte('\\')
			b.WriteByte(c)
			quote = true
		case strings.IndexByte(" !#%&()*<=>?[|", c) >= 0:
			b.WriteByte(c)
			quote = true
		default:
			b.WriteByte(c)
		}
	}
	if !quote {
		return b.String()
	}
	return `"` + b.String() + `"`
}

func sQuote(s string) string { return singleQuote(s) }

type scriptShape struct {
	name   string
	q      quoter
	legacy bool
	noEval bool
}

var shapes = []scriptShape{
	{name: "ansi-c", q: ansiCQuote},
	{name: "ansi-c legacy eval", q: ansiCQuote, legacy: true},
	{name: "posix escapes", q: posixQuote, legacy: true},
	{name: "single quotes", q: sQuote},
	{name: "no eval wrapper", q: ansiCQuote, noEval: true},
}

func makeScript(sh scriptShape, vars []scriptVar, tmp, body string) string {
	var b strings.Builder
	for _, v := range vars {
		if v.file {
			fmt.Fprintf(&b, "mkdir -p %q\n", tmp)
			fmt.Fprintf(&b, "printf '%%s' %s > %q\n", sh.q(v.value), tmp+"/"+v.key)
			fmt.Fprintf(&b, "export %s=%q\n", v.key, tmp+"/"+v.key)
			continue
		}
		fmt.Fprintf(&b, "export %s=%s\n", v.key, sh.q(v.value))
	}
	b.WriteString(body)
	head := "#!/usr/bin/env bash\n\ntrap 'exit 1' TERM\n\n" +
		`case "$(set -o)" in *"pipefail"*) set -o pipefail;; esac; set -o errexit` + "\nset +o noclobber\n"
	switch {
	case sh.noEval:
		return head + b.String() + "exit 0\n"
	case sh.legacy:
		return head + ": | eval " + sh.q(b.String()) + "\nexit 0\n"
	}
	return head + "(trap 'exit 1' TERM; eval " + sh.q(b.String()) + ") < /dev/null\nexit 0\n"
}

func runShell(t *testing.T, shell, script, tmp string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "script")
	os.WriteFile(p, []byte(script), 0o700)
	cmd := exec.Command(shell, p)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "TMPV=" + tmp, "HOME=/nonexistent"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s\n--- script\n%s", shell, p, err, out, script)
	}
	return string(out)
}

// The rewritten script behaves like the original, minus the runner-only
// variables, in every shape the runner writes, under bash and POSIX sh.
func TestRewriteScriptShapes(t *testing.T) {
	keys := []string{"SIGSTORE_ID_TOKEN", "VAULT_ID_TOKEN"}
	secrets := []string{testToken, testVault}
	shells := []string{}
	for _, s := range []string{"/bin/bash", "/bin/sh", "/bin/busybox"} {
		if _, err := os.Stat(s); err == nil {
			shells = append(shells, s)
		}
	}
	if len(shells) == 0 {
		t.Fatal("no shell to run the rewritten scripts with")
	}
	for _, sh := range shapes {
		t.Run(sh.name, func(t *testing.T) {
			tmp := t.TempDir()
			orig := makeScript(sh, testVars(tmp), tmp, testBody)
			if !strings.Contains(orig, "eyJhbGciOiJSUzI1NiJ9") {
				t.Fatal("test script does not carry the token")
			}
			got, err := RewriteScript(orig, keys, secrets)
			if err != nil {
				t.Fatalf("rewrite: %v\n%s", err, orig)
			}
			for _, s := range secrets {
				if containsSecret(got, s) {
					t.Fatalf("secret survived:\n%s", got)
				}
			}
			if strings.Contains(got, "s3cr3t") || strings.Contains(got, "second-line-of-the-vault") {
				t.Fatalf("vault fragments survived:\n%s", got)
			}
			for _, shell := range shells {
				if shell == "/bin/sh" && sh.q(testFoo) != sQuote(testFoo) && !strings.HasPrefix(sh.name, "posix") {
					// dash has no $'…'; the runner's default scripts are
					// for bash (busybox sh reads them too).
					continue
				}
				var out string
				if shell == "/bin/busybox" {
					out = runBusybox(t, got, tmp)
				} else {
					out = runShell(t, shell, got, tmp)
				}
				want := "SIGSTORE=unset\nVAULT=unset\nFOO=" + testFoo + "|\nAFTER=after\n"
				if out != want {
					t.Errorf("%s: output\n%q\nwant\n%q\n--- script\n%s", shell, out, want, got)
				}
			}
		})
	}
}

func runBusybox(t *testing.T, script, tmp string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "script")
	os.WriteFile(p, []byte(script), 0o700)
	cmd := exec.Command("/bin/busybox", "sh", p)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "TMPV=" + tmp, "HOME=/nonexistent"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("busybox sh: %v\n%s", err, out)
	}
	return string(out)
}

// Scripts that set no runner-only variable are passed through byte for
// byte.
func TestRewriteScriptUnchanged(t *testing.T) {
	tmp := "/builds/x.tmp"
	vars := []scriptVar{{key: "A", value: "1"}, {key: "B", value: "two words"}}
	for _, sh := range shapes {
		s := makeScript(sh, vars, tmp, "echo hi\n")
		got, err := RewriteScript(s, []string{SigstoreTokenVariable}, nil)
		if err != nil || got != s {
			t.Errorf("%s: script changed (%v)", sh.name, err)
		}
	}
}

// A secret that appears anywhere else in the script (a user echoes it,
// another variable embeds it) stops the stage instead of leaking.
func TestRewriteScriptRefusesLeftoverSecret(t *testing.T) {
	tmp := "/builds/x.tmp"
	vars := []scriptVar{{key: SigstoreTokenVariable, value: testToken}, {key: "COPY", value: "token=" + testToken}}
	s := makeScript(shapes[0], vars, tmp, "echo hi\n")
	if _, err := RewriteScript(s, []string{SigstoreTokenVariable}, []string{testToken}); !errors.Is(err, ErrSecretInScript) {
		t.Fatalf("got %v, want ErrSecretInScript", err)
	}
	// A value too short to search for is not a reason to refuse.
	if _, err := RewriteScript("export X=abc\necho abc\n", []string{"X"}, []string{"abc"}); err != nil {
		t.Fatal(err)
	}
}

func TestParseWord(t *testing.T) {
	for _, tc := range []struct {
		in, val, rest string
		ok            bool
	}{
		{`plain rest`, "plain", " rest", true},
		{`'single '\''quoted'\' x`, "single 'quoted'", " x", true},
		{`$'a\nb\x41\'c\\' x`, "a\nbA'c\\", " x", true},
		{`"d \"q\" \$x \\ y" x`, `d "q" $x \ y`, " x", true},
		{`"$HOME" x`, "$HOME", " x", false},
		{`a$b;x`, "a$b", ";x", false},
		{`'unterminated`, "", "", false},
		{`$'\101\u00e9\cA'`, "A\u00e9\x01", "", true},
	} {
		val, end, ok := parseWord(tc.in, 0)
		if val != tc.val || tc.in[end:] != tc.rest || ok != tc.ok {
			t.Errorf("parseWord(%q) = %q, rest %q, ok %v; want %q, %q, %v", tc.in, val, tc.in[end:], ok, tc.val, tc.rest, tc.ok)
		}
	}
}

func TestShellArgs(t *testing.T) {
	if _, err := ShellArgs([]byte("#!/usr/bin/env pwsh\n"), "/s"); err == nil {
		t.Error("a PowerShell script was accepted")
	}
	if _, err := ShellArgs([]byte("#!/usr/bin/env zsh\n"), "/s"); err == nil {
		t.Error("a zsh script was accepted")
	}
	for _, tc := range []struct {
		script   string
		wantBash bool
	}{
		{"#!/usr/bin/env bash\necho \"${BASH_VERSION:-nobash}\"\n", true},
		{"#!/bin/bash\necho \"${BASH_VERSION:-nobash}\"\n", true},
		{"echo \"${BASH_VERSION:-nobash}\"\n", true},
		{"#!/usr/bin/env sh\necho \"${BASH_VERSION:-nobash}\"\n", false},
	} {
		p := filepath.Join(t.TempDir(), "script")
		os.WriteFile(p, []byte(tc.script), 0o600)
		args, err := ShellArgs([]byte(tc.script), p)
		if err != nil {
			t.Fatal(err)
		}
		if args[0] != "/bin/sh" || args[len(args)-1] != p {
			t.Fatalf("args %q", args)
		}
		if _, err := os.Stat("/bin/bash"); err != nil {
			continue
		}
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		if gotBash := !strings.Contains(string(out), "nobash"); gotBash != tc.wantBash {
			t.Errorf("%q ran under bash=%v, want %v", tc.script, gotBash, tc.wantBash)
		}
	}
}
