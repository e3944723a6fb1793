package pipeline

import (
	"math"
	"testing"
)

func TestParseSize(t *testing.T) {
	valid := []struct {
		in   string
		want int64
	}{
		{"1", 1},
		{"1073741824", 1 << 30},
		{"512B", 512},
		{"1Ki", 1024},
		{"1KiB", 1024},
		{"512Mi", 512 << 20},
		{"512MiB", 512 << 20},
		{"1Gi", 1 << 30},
		{"1GiB", 1 << 30},
		{"2TiB", 2 << 40},
		{"1.5GiB", 3 << 29},
		{".5Ki", 512},
		{"1K", 1000},
		{"1KB", 1000},
		{"1k", 1000},
		{"1kB", 1000},
		{"1M", 1e6},
		{"1MB", 1e6},
		{"1G", 1e9},
		{"1GB", 1e9},
		{"1T", 1e12},
		{"1TB", 1e12},
		{"2.5G", 2.5e9},
		{" 1 GiB ", 1 << 30},
		{"+1Gi", 1 << 30},
		{"9223372036854775807", math.MaxInt64},
		{"8388607TiB", 8388607 << 40},
	}
	for _, tt := range valid {
		got, err := ParseSize(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	invalid := []struct{ in, want string }{
		{"", `invalid size "": ` + sizeHelp},
		{"GiB", `invalid size "GiB": ` + sizeHelp},
		{".", `invalid size ".": ` + sizeHelp},
		{"0", `invalid size "0": must be greater than zero`},
		{"0GiB", `invalid size "0GiB": must be greater than zero`},
		{"-1Gi", `invalid size "-1Gi": must be positive; ` + sizeHelp},
		{"1gb", `invalid size "1gb": unknown unit "gb"; ` + sizeHelp},
		{"1Gb", `invalid size "1Gb": unknown unit "Gb"; ` + sizeHelp},
		{"1 gigabyte", `invalid size "1 gigabyte": unknown unit "gigabyte"; ` + sizeHelp},
		{"1.2.3G", `invalid size "1.2.3G": unknown unit ".3G"; ` + sizeHelp},
		{"1e9", `invalid size "1e9": unknown unit "e9"; ` + sizeHelp},
		{"0.1Ki", `invalid size "0.1Ki": not a whole number of bytes`},
		{"1.5", `invalid size "1.5": not a whole number of bytes`},
		{"9223372036854775808", `invalid size "9223372036854775808": too large (the maximum is 9223372036854775807 bytes)`},
		{"8388608TiB", `invalid size "8388608TiB": too large (the maximum is 9223372036854775807 bytes)`},
	}
	for _, tt := range invalid {
		got, err := ParseSize(tt.in)
		if err == nil || err.Error() != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want error %q", tt.in, got, err, tt.want)
		}
	}
}

func TestFormatSize(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0B"},
		{-5, "-5B"},
		{1, "1B"},
		{1023, "1023B"},
		{1024, "1KiB"},
		{2 << 30, "2GiB"},
		{1536 << 20, "1536MiB"},
		{3 << 40, "3TiB"},
		{1e9, "1GB"},
		{3000, "3KB"},
		{1500, "1.5KiB"},
		{1<<20 - 1, "1.0MiB"},
		{1<<30 + 1, "1.0GiB"},
		{math.MaxInt64, "8388608.0TiB"},
	}
	for _, tt := range tests {
		if got := FormatSize(tt.in); got != tt.want {
			t.Errorf("FormatSize(%d) = %q; want %q", tt.in, got, tt.want)
		}
	}
	// Exact forms round-trip.
	for _, n := range []int64{1, 999, 1024, 1000, 512 << 20, 1e9, 5e12, DefaultMemoryBytes, 8388607 << 40} {
		back, err := ParseSize(FormatSize(n))
		if err != nil || back != n {
			t.Errorf("ParseSize(FormatSize(%d) = %q) = %d, %v", n, FormatSize(n), back, err)
		}
	}
}
