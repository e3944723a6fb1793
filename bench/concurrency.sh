#!/usr/bin/env bash
# One batch of the concurrency benchmark, timed by benchrun:
#   concurrency.sh seq|par N TAG
# runs the pipeline of workspace ws-K (K = 1..N, under $BENCH_CONC_WS) N
# times, one after the other (seq) or all at once (par), each cleanroom
# process under /usr/bin/time -v so that its peak RSS is on record in
# $BENCH_CONC_DIR/rss/TAG-MODE-K.txt, and each exit status in
# $BENCH_CONC_DIR/status/TAG-MODE-K. Exits non-zero if any run failed.
# Needs CLEANROOM (binary) and CLEANROOM_ARGS (global flags) in the
# environment.
set -euo pipefail

mode=$1 n=$2 tag=$3
ws=${BENCH_CONC_WS:?}
dir=${BENCH_CONC_DIR:?}
: "${CLEANROOM:?}" "${CLEANROOM_ARGS:?}"
mkdir -p "$dir/rss" "$dir/status" "$dir/logs"

one() {
	local k=$1 rc=0
	# shellcheck disable=SC2086 # CLEANROOM_ARGS is a list of flags
	/usr/bin/time -v -o "$dir/rss/$tag-$mode-$k.txt" \
		"$CLEANROOM" $CLEANROOM_ARGS run -f "$ws/ws-$k/cleanroom.yaml" \
		>"$dir/logs/$tag-$mode-$k.log" 2>&1 || rc=$?
	echo "$rc" >"$dir/status/$tag-$mode-$k"
	return "$rc"
}

failed=0
case $mode in
seq)
	for k in $(seq "$n"); do
		one "$k" || failed=$((failed + 1))
	done
	;;
par)
	pids=()
	for k in $(seq "$n"); do
		one "$k" &
		pids+=($!)
	done
	for p in "${pids[@]}"; do
		wait "$p" || failed=$((failed + 1))
	done
	;;
*)
	echo "usage: concurrency.sh seq|par N TAG" >&2
	exit 2
	;;
esac
if [ "$failed" -gt 0 ]; then
	echo "concurrency.sh: $failed of $n runs ($mode, $tag) failed; logs in $dir/logs/$tag-$mode-*.log" >&2
	tail -n 20 "$dir"/logs/"$tag-$mode"-*.log >&2 || true
	exit 1
fi
