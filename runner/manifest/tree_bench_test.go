package manifest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// genTree writes files files totalling about total bytes under dir, 100
// per directory, with sizes spread from a few bytes to a few times the
// mean, like a source tree with some large blobs. Content is pseudo-random
// and deterministic.
func genTree(dir string, files int, total int64) error {
	rng := rand.New(rand.NewPCG(1, 2))
	mean := total / int64(files)
	sizes := make([]int64, files)
	var sum int64
	for i := range sizes {
		// exponential-ish spread: most files small, a few large
		sizes[i] = int64(rng.ExpFloat64() * float64(mean))
		sum += sizes[i]
	}
	buf := make([]byte, 0)
	src := rand.NewChaCha8([32]byte{7})
	for i, s := range sizes {
		s = s * total / max(sum, 1)
		if int64(cap(buf)) < s {
			buf = make([]byte, s)
		}
		b := buf[:s]
		src.Read(b)
		p := filepath.Join(dir, fmt.Sprintf("d%03d", i/100), fmt.Sprintf("f%05d.bin", i))
		if i%100 == 0 {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkTreeDigest hashes a generated tree: 2,000 files / 64 MiB by
// default, 10,000 files / 1 GiB with CLEANROOM_BENCH_LARGE=1.
func BenchmarkTreeDigest(b *testing.B) {
	files, total := 2000, int64(64<<20)
	if os.Getenv("CLEANROOM_BENCH_LARGE") != "" {
		files, total = 10000, 1<<30
	}
	dir := b.TempDir()
	if err := genTree(dir, files, total); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(total)
	for b.Loop() {
		if _, _, err := TreeDigest(context.Background(), dir, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// TestBenchHelper is driven by bench_hash.sh, not by go test: with
// CLEANROOM_BENCH_GEN=dir it generates a tree (CLEANROOM_BENCH_FILES,
// CLEANROOM_BENCH_BYTES), with CLEANROOM_BENCH_DIGEST=dir it prints the
// digest of that tree and the time taken.
func TestBenchHelper(t *testing.T) {
	if dir := os.Getenv("CLEANROOM_BENCH_GEN"); dir != "" {
		files, _ := strconv.Atoi(os.Getenv("CLEANROOM_BENCH_FILES"))
		total, _ := strconv.ParseInt(os.Getenv("CLEANROOM_BENCH_BYTES"), 10, 64)
		if err := genTree(dir, files, total); err != nil {
			t.Fatal(err)
		}
		return
	}
	dir := os.Getenv("CLEANROOM_BENCH_DIGEST")
	if dir == "" {
		t.Skip("run by bench_hash.sh")
	}
	start := time.Now()
	d, n, err := TreeDigest(context.Background(), dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("%s %d entries %v\n", d, n, time.Since(start))
}
