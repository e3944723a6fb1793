#!/usr/bin/env bash
# Compares TreeDigest with the obvious shell baseline,
#   find . -type f -print0 | xargs -0 -P"$(nproc)" -n 64 sha256sum
# on a generated tree (10,000 files, 1 GiB by default; FILES, BYTES and
# ROUNDS override). Runs are interleaved A B A B … so that drift in machine
# load hits both sides alike, on a warm page cache, and wall-clock times
# include process start-up on both sides. Prints the medians and the ratio
# baseline/ours (above 1 means TreeDigest is faster).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
files=${FILES:-10000}
bytes=${BYTES:-$((1 << 30))}
rounds=${ROUNDS:-5}
procs=$(nproc)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "building test helper…"
(cd "$here" && go test -c -o "$tmp/manifest.test" .)
echo "generating $files files, $bytes bytes in $tmp/tree…"
CLEANROOM_BENCH_GEN="$tmp/tree" CLEANROOM_BENCH_FILES=$files CLEANROOM_BENCH_BYTES=$bytes \
	"$tmp/manifest.test" -test.run '^TestBenchHelper$' >/dev/null

ours() {
	CLEANROOM_BENCH_DIGEST="$tmp/tree" "$tmp/manifest.test" -test.run '^TestBenchHelper$' >/dev/null
}
baseline() {
	(cd "$tmp/tree" && find . -type f -print0 | xargs -0 -P"$procs" -n 64 sha256sum >/dev/null)
}
elapsed_ms() {
	local start end
	start=$(date +%s%N)
	"$@"
	end=$(date +%s%N)
	echo $(((end - start) / 1000000))
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

ours >/dev/null
baseline # warm the page cache for both

a=() b=()
for i in $(seq "$rounds"); do
	a+=("$(elapsed_ms ours)")
	b+=("$(elapsed_ms baseline)")
	echo "round $i: TreeDigest ${a[-1]} ms, sha256sum ${b[-1]} ms"
done
ma=$(median "${a[@]}")
mb=$(median "${b[@]}")
mib=$(awk -v b="$bytes" 'BEGIN {print b / 1048576}')
awk -v a="$ma" -v b="$mb" -v m="$mib" -v p="$procs" -v f="$files" 'BEGIN {
	printf "files %d, %.0f MiB, %d CPUs\n", f, m, p
	printf "median TreeDigest: %d ms (%.0f MiB/s)\n", a, m / (a / 1000)
	printf "median sha256sum:  %d ms (%.0f MiB/s)\n", b, m / (b / 1000)
	printf "ratio sha256sum/TreeDigest: %.2f (target >= 0.90)\n", b / a
}'
