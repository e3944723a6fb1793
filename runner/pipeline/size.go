package pipeline

import (
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// Size units. Binary (IEC) units are powers of 1024 and are what memory is
// usually counted in; decimal (SI) units are powers of 1000. The spellings
// follow Kubernetes, whose users expect "1Gi" = 2^30 and "1G" = 10^9, and
// also accept the "B"-suffixed forms people write in prose ("1GiB", "1GB").
// Matching is case-sensitive: "1gb" is ambiguous (bits or bytes?), so it is
// rejected with the list of accepted units.
var sizeUnits = map[string]int64{
	"":  1,
	"B": 1,

	"Ki": 1 << 10, "KiB": 1 << 10,
	"Mi": 1 << 20, "MiB": 1 << 20,
	"Gi": 1 << 30, "GiB": 1 << 30,
	"Ti": 1 << 40, "TiB": 1 << 40,

	"K": 1e3, "KB": 1e3, "k": 1e3, "kB": 1e3,
	"M": 1e6, "MB": 1e6,
	"G": 1e9, "GB": 1e9,
	"T": 1e12, "TB": 1e12,
}

const sizeHelp = "use a whole number of bytes or a number with a unit: " +
	"KiB, MiB, GiB, TiB (or Ki, Mi, Gi, Ti) for powers of 1024, " +
	"KB, MB, GB, TB (or K, M, G, T) for powers of 1000; e.g. 512MiB, 2GiB, 1.5Gi"

// ParseSize parses a byte size such as "1GiB", "512Mi", "1G", "1.5GiB" or
// "1073741824". The result must be a positive whole number of bytes that
// fits in an int64; zero, negative, fractional-byte and overflowing sizes
// are errors, because a limit of zero or less is never what was meant.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if strings.HasPrefix(t, "-") {
		return 0, fmt.Errorf("invalid size %q: must be positive; %s", s, sizeHelp)
	}
	t = strings.TrimPrefix(t, "+")
	// Split into the number (digits, at most one '.') and the unit.
	end := 0
	dot := -1
	for end < len(t) && (t[end] >= '0' && t[end] <= '9' || t[end] == '.' && dot < 0) {
		if t[end] == '.' {
			dot = end
		}
		end++
	}
	num, unit := t[:end], strings.TrimSpace(t[end:])
	intPart, frac := num, ""
	if dot >= 0 {
		intPart, frac = num[:dot], num[dot+1:]
	}
	if intPart == "" && frac == "" {
		return 0, fmt.Errorf("invalid size %q: %s", s, sizeHelp)
	}
	mult, ok := sizeUnits[unit]
	if !ok {
		return 0, fmt.Errorf("invalid size %q: unknown unit %q; %s", s, unit, sizeHelp)
	}
	// Exact arithmetic: "1.5Gi" is exactly 1610612736 bytes, and a float
	// would silently round large values.
	mant, ok := new(big.Int).SetString(intPart+frac, 10)
	if !ok {
		return 0, fmt.Errorf("invalid size %q: %s", s, sizeHelp)
	}
	v := new(big.Int).Mul(mant, big.NewInt(mult))
	den := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(frac))), nil)
	q, r := new(big.Int).QuoRem(v, den, new(big.Int))
	switch {
	case r.Sign() != 0:
		return 0, fmt.Errorf("invalid size %q: not a whole number of bytes", s)
	case q.Sign() == 0:
		return 0, fmt.Errorf("invalid size %q: must be greater than zero", s)
	case !q.IsInt64():
		return 0, fmt.Errorf("invalid size %q: too large (the maximum is %d bytes)", s, int64(math.MaxInt64))
	}
	return q.Int64(), nil
}

// FormatSize renders a byte count for display. It picks the largest unit
// that represents n exactly, preferring binary units ("2GiB", "512MiB", then
// "1GB"), so the output parses back to n with ParseSize. Values with no
// exact representation are shown rounded to one decimal in the largest
// binary unit ("1.5KiB" for 1500); those do not round-trip.
func FormatSize(n int64) string {
	binary := []struct {
		name string
		mult int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}}
	decimal := []struct {
		name string
		mult int64
	}{{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}}
	if n <= 0 {
		return strconv.FormatInt(n, 10) + "B"
	}
	for _, u := range binary {
		if n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.name
		}
	}
	for _, u := range decimal {
		if n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.name
		}
	}
	for i, u := range binary {
		if n >= u.mult {
			v := float64(n) / float64(u.mult)
			if v >= 1023.95 && i > 0 { // would print as "1024.0"
				u, v = binary[i-1], v/1024
			}
			return strconv.FormatFloat(v, 'f', 1, 64) + u.name
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}
