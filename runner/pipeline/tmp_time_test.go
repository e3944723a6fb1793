package pipeline

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestTmpTime(t *testing.T) {
	files, _ := filepath.Glob(os.Getenv("CORPUS") + "/*")
	for _, f := range files {
		b, _ := os.ReadFile(f)
		lit := strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[1])
		lit = strings.TrimSuffix(strings.TrimPrefix(lit, "[]byte("), ")")
		s, err := strconv.Unquote(lit)
		if err != nil {
			t.Fatal(f, err)
		}
		start := time.Now()
		Parse("x", []byte(s))
		if d := time.Since(start); d > 50*time.Millisecond {
			fmt.Printf("%v %s len=%d %q\n", d, filepath.Base(f), len(s), s[:min(len(s), 200)])
		}
	}
}
