package userns

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cleanroom-ci/cleanroom/internal/testenv"
)

// BenchmarkOwnershipPass is the fallback's cost where a workspace cannot
// be idmapped: In before the step and Out after it, over a tree of 10000
// files in 100 directories (a mid-sized checkout with its build output).
func BenchmarkOwnershipPass(b *testing.B) {
	testenv.RequireRoot(b)
	root := b.TempDir()
	for d := 0; d < 100; d++ {
		dir := filepath.Join(root, fmt.Sprint(d))
		os.MkdirAll(dir, 0o755)
		for f := 0; f < 100; f++ {
			os.WriteFile(filepath.Join(dir, fmt.Sprint(f)), []byte("x"), 0o644)
		}
	}
	s := ShiftOwner{Owner: FileOwner{0, 0}, Range: Range{HostUID: DefaultBase, HostGID: DefaultBase, Size: SlotSize}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.In(root); err != nil {
			b.Fatal(err)
		}
		if err := s.Out(root); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReclaimWalk is what the idmapped path costs after each step:
// a walk of the same tree giving the step's non-root files to the owner
// (here there are none, the common case).
func BenchmarkReclaimWalk(b *testing.B) {
	testenv.RequireRoot(b)
	root := b.TempDir()
	for d := 0; d < 100; d++ {
		dir := filepath.Join(root, fmt.Sprint(d))
		os.MkdirAll(dir, 0o755)
		for f := 0; f < 100; f++ {
			os.WriteFile(filepath.Join(dir, fmt.Sprint(f)), []byte("x"), 0o644)
		}
	}
	s := ShiftOwner{Owner: FileOwner{0, 0}, Range: Range{HostUID: DefaultBase, HostGID: DefaultBase, Size: SlotSize}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.Out(root); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIDMappedMount is what the default path costs instead: one
// idmapped bind mount and its removal.
func BenchmarkIDMappedMount(b *testing.B) {
	testenv.RequireRoot(b)
	src, dst := b.TempDir(), filepath.Join(b.TempDir(), "m")
	r := Range{HostUID: DefaultBase, HostGID: DefaultBase, Size: SlotSize}
	for i := 0; i < b.N; i++ {
		if err := IDMapped(src, dst, FileOwner{0, 0}, r); err != nil {
			b.Fatal(err)
		}
		if err := Unmount(dst); err != nil {
			b.Fatal(err)
		}
	}
}
