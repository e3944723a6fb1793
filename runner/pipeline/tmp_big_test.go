package pipeline

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestTmpBig(t *testing.T) {
	inputs := map[string]string{
		"deep flow":  "version: 1\nx-a: " + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + "\n",
		"deep open":  "version: 1\nx-a: " + strings.Repeat("{a: ", 50000) + "\n",
		"many keys":  "version: 1\n" + strings.Repeat("x-k: 1\n", 1) + func() string { var b strings.Builder; for i := 0; i < 60000; i++ { fmt.Fprintf(&b, "x-%d: %d\n", i, i) }; return b.String() }(),
		"many steps": "version: 1\nimage: alpine\nsteps:\n" + func() string { var b strings.Builder; for i := 0; i < 20000; i++ { fmt.Fprintf(&b, "  - {name: s%d, run: x}\n", i) }; return b.String() }(),
		"long flow":  "version: 1\nimage: alpine\nsteps: [{name: a, run: b}]\nartifacts: [" + strings.Repeat("a, ", 300000) + "a]\n",
		"long line":  "version: 1\nimage: " + strings.Repeat("a", 1000000) + "\n",
		"aliases":    "version: 1\nimage: alpine\nx-a: &a [" + strings.Repeat("r, ", 1000) + "r]\nsteps: [" + strings.Repeat("{name: a, run: b, egress: {allow: *a}}, ", 3000) + "{name: z, run: b}]\n",
		"indent":     "version: 1\nx-a:\n" + func() string { var b strings.Builder; for i := 0; i < 3000; i++ { b.WriteString(strings.Repeat(" ", i+1) + "- \n") }; return b.String() }(),
	}
	for name, in := range inputs {
		start := time.Now()
		_, err := Parse("x", []byte(in))
		msg := ""
		if err != nil {
			msg = strings.SplitN(err.Error(), "\n", 2)[0]
		}
		fmt.Printf("%-10s len=%7d %v %.150s\n", name, len(in), time.Since(start), msg)
	}
}
