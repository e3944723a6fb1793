#!/usr/bin/env bash
# make bench: cleanroom against its baselines on this machine, side by side,
# as ratios measured in the same run with the two sides interleaved. Writes
# raw results to bench/out/ and the report to docs/benchmarks.md.
#
#   1. step start-up: cleanroom run vs ctr run --rm vs runc run vs unshare,
#      1 and 20 steps, with the --trace span breakdown
#   2. egress proxy: 1 GiB throughput vs direct, 500 concurrent fetches vs
#      squid, peak RSS while streaming 2 GiB
#   3. workspace hashing: runner/manifest/bench_hash.sh
#   4. concurrency: 8 pipelines at once vs in sequence, runner peak RSS
#   5. Go micro-benchmarks of sandbox/egress
#   6. agent: jobs per minute of a trivial pipeline, one agent vs two
#
# Needs root (containers, namespaces). Uses its own containerd namespace,
# state directory and temporary directory, and removes them, the containers
# it created and the servers it started on exit. Any failure stops it: no
# figure is ever made up.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"

OUT=${BENCH_OUT:-$root/bench/out}
DOC=${BENCH_DOC:-$root/docs/benchmarks.md}
SOCK=${BENCH_CONTAINERD:-/run/containerd/containerd.sock}
NS=cleanroom-bench
STATE=/run/cleanroom-bench
STARTUP_ROUNDS=${STARTUP_ROUNDS:-8}
STREAM_ROUNDS=${STREAM_ROUNDS:-3}
LATENCY_ROUNDS=${LATENCY_ROUNDS:-5}
HASH_ROUNDS=${HASH_ROUNDS:-5}
CONC_ROUNDS=${CONC_ROUNDS:-3}
MICRO_COUNT=${MICRO_COUNT:-5}
BUDGET_S=900 # the whole run must stay under 15 minutes

log() { printf '\n==> %s\n' "$*" >&2; }
die() {
	echo "bench: $*" >&2
	exit 1
}

# ---- prerequisites ----------------------------------------------------------

[ "$(id -u)" = 0 ] || die "must run as root (containers and namespaces need it)"
command -v go >/dev/null || die "go is not installed"

answers() { [ -S "$SOCK" ] && timeout 5 ctr --address "$SOCK" version >/dev/null 2>&1; }
if ! command -v ctr >/dev/null || ! answers || ! command -v runc >/dev/null || [ ! -x /bin/busybox ]; then
	log "containerd, runc or busybox missing or not answering: running hack/setup.sh"
	./hack/setup.sh
fi
answers || die "containerd does not answer at $SOCK"
for c in ctr runc unshare; do
	command -v "$c" >/dev/null || die "$c is not installed"
done

need=()
command -v squid >/dev/null || need+=(squid)
command -v crun >/dev/null || need+=(crun)
[ -x /usr/bin/time ] || need+=(time)
if [ "${#need[@]}" -gt 0 ]; then
	log "installing ${need[*]} with apt"
	squid_before=$(pgrep -x squid || true)
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; then
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
	fi
	# Where the package starts its system-wide squid, stop that one: the
	# bench runs its own, on loopback, with a private configuration.
	if [ -z "$squid_before" ] && [ -s /run/squid.pid ]; then
		kill "$(cat /run/squid.pid)" 2>/dev/null || true
	fi
fi
command -v squid >/dev/null || die "squid is not installed"
command -v crun >/dev/null || die "crun is not installed"
CRUN=$(command -v crun)
[ -x /usr/bin/time ] || die "/usr/bin/time is not installed"

# ---- workspace and clean-up ---------------------------------------------------

# One bench at a time: they would share the namespace and state directory.
exec 9>/run/cleanroom-bench.lock
flock -n 9 || die "another make bench is running"

if [ -e "$OUT" ] && [ ! -e "$OUT/.bench-out" ] && [ -n "$(ls -A "$OUT")" ]; then
	die "$OUT exists and is not a bench output directory; not removing it"
fi
rm -rf "$OUT"
mkdir -p "$OUT/traces" "$OUT/logs" "$OUT/concurrency"
touch "$OUT/.bench-out"
WORK=$(mktemp -d /var/tmp/cleanroom-bench.XXXXXX)
pids=() # background servers this script started

stop_pids() {
	local p
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for _ in $(seq 50); do
		local alive=0
		for p in "${pids[@]}"; do
			kill -0 "$p" 2>/dev/null && alive=1
		done
		[ "$alive" = 0 ] && break
		sleep 0.2
	done
	for p in "${pids[@]}"; do
		kill -9 "$p" 2>/dev/null || true
	done
	pids=()
}

# purge removes whatever the bench leaves in containerd, runc and its
# state directory; it also runs first, for residue of a run that was killed.
purge() {
	set +e
	local c ctr_=(ctr --address "$SOCK" -n "$NS")
	for c in $("${ctr_[@]}" tasks ls -q 2>/dev/null); do
		"${ctr_[@]}" tasks kill -s SIGKILL "$c" >/dev/null 2>&1
		"${ctr_[@]}" tasks rm -f "$c" >/dev/null 2>&1
	done
	for c in $("${ctr_[@]}" containers ls -q 2>/dev/null); do
		"${ctr_[@]}" containers rm "$c" >/dev/null 2>&1
	done
	for c in $("${ctr_[@]}" leases ls -q 2>/dev/null); do
		"${ctr_[@]}" leases rm "$c" >/dev/null 2>&1
	done
	for c in $("${ctr_[@]}" images ls -q 2>/dev/null); do
		"${ctr_[@]}" images rm "$c" >/dev/null 2>&1
	done
	# The namespace goes once containerd's GC has dropped the image's
	# content and snapshots, which takes a moment after the images go.
	for _ in $(seq 40); do
		ctr --address "$SOCK" namespaces ls -q 2>/dev/null | grep -qx "$NS" || break
		ctr --address "$SOCK" namespaces rm "$NS" >/dev/null 2>&1 && break
		sleep 0.25
	done
	for c in $(runc --root "$STATE/runc" list -q 2>/dev/null); do
		runc --root "$STATE/runc" delete -f "$c" >/dev/null 2>&1
	done
	if [ -d "$STATE" ]; then
		for c in "$STATE"/netns/*; do
			[ -e "$c" ] && umount -l "$c" 2>/dev/null
		done
		mountpoint -q "$STATE/netns" && umount -l "$STATE/netns"
		rm -rf "$STATE"
	fi
}

cleanup() {
	set +e
	stop_pids
	purge
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

t_start=$(date +%s.%N)
phase_t0=$t_start
phase=""
begin() {
	phase=$1
	phase_t0=$(date +%s.%N)
	log "$1"
}
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
end() { printf '%s\t%s\n' "$phase" "$(since "$phase_t0")" >>"$OUT/phases.tsv"; }
(purge) || true
date -u '+%Y-%m-%d %H:%M UTC' >"$OUT/date.txt"
echo "start $(cut -d' ' -f1-3 /proc/loadavg)" >"$OUT/load.txt"

# wait_file FILE: until a server has written its address.
wait_file() {
	for _ in $(seq 200); do
		[ -s "$1" ] && return 0
		sleep 0.05
	done
	die "timed out waiting for $1"
}

# ---- build ----------------------------------------------------------------------

begin build
mkdir -p "$WORK/bin"
version=$(git describe --always --dirty 2>/dev/null || echo dev)
go build -ldflags "-X main.version=$version" -o "$WORK/bin/cleanroom" ./cmd/cleanroom
for t in benchrun egressbench benchreport agentbench; do
	go build -o "$WORK/bin/$t" "./bench/cmd/$t"
done
BR=$WORK/bin/benchrun
EB=$WORK/bin/egressbench
# The micro-benchmarks are compiled now too, so that every part measures
# the same snapshot of the tree and a tree that does not build fails at once.
go test -c -o "$WORK/bin/egress.test" ./sandbox/egress/
go run ./internal/cmd/mkbusybox -o "$WORK/busybox.tar" >/dev/null
go build -o "$WORK/bin/nats-server" github.com/nats-io/nats-server/v2
CR="$WORK/bin/cleanroom --state-dir $STATE --namespace $NS --containerd-address $SOCK"
end

# ---- 1. step start-up -------------------------------------------------------------

begin startup
mkdir -p "$WORK/ws1" "$WORK/ws20" "$WORK/ws10w"
cp "$WORK/busybox.tar" "$WORK/ws1/"
cp "$WORK/busybox.tar" "$WORK/ws20/"
cp "$WORK/busybox.tar" "$WORK/ws10w/"
cat >"$WORK/ws1/cleanroom.yaml" <<'EOF'
version: 1
image: oci-archive:./busybox.tar
egress: {allow: []}
steps:
  - name: s1
    run: "true"
EOF
{
	printf 'version: 1\nimage: oci-archive:./busybox.tar\negress: {allow: []}\nsteps:\n'
	for i in $(seq 20); do
		printf '  - name: s%d\n    run: "true"\n' "$i"
	done
} >"$WORK/ws20/cleanroom.yaml"
# Steps that wait (on I/O, the network) rather than burn CPU: the next
# step's start-up can hide behind them.
{
	printf 'version: 1\nimage: oci-archive:./busybox.tar\negress: {allow: []}\nsteps:\n'
	for i in $(seq 10); do
		printf '  - name: w%d\n    run: "sleep 0.5"\n' "$i"
	done
} >"$WORK/ws10w/cleanroom.yaml"

# The same archive for ctr, in the bench's own namespace.
IMG=localhost/cleanroom-busybox:latest
ctr --address "$SOCK" -n "$NS" images import "$WORK/busybox.tar" >/dev/null
ctr --address "$SOCK" -n "$NS" images ls -q | grep -qx "$IMG" || die "ctr import did not create $IMG"
# And as a runc bundle: the image's rootfs, runc spec, args true, no terminal.
"$BR" bundle -archive "$WORK/busybox.tar" -o "$WORK/bundle" true

# ctr-hardened adds what ctr can express of cleanroom's sandbox: read-only
# root, the default seccomp profile, cleanroom's default memory and CPU
# limits. cleanroom-20-group lets the steps of a run share one runc shim,
# to measure whether that saves time. The -crun cases run the same under the same runc shim
# with crun as its OCI runtime binary (cleanroom through
# CLEANROOM_BENCH_OCI_BINARY, ctr through --runc-binary), where crun can
# create a container on this host at all (it refuses cgroup v1 hosts whose
# cgroup2 hierarchy has controllers: the probe's error is reported).
# GOPROXY is left unset, so that `cleanroom run` derives it from `go env`
# (cached under its state directory) as it would on a developer's machine.
crun_cases=()
crun_ratios=()
if crun_err=$(ctr --address "$SOCK" -n "$NS" run --rm --runc-binary "$CRUN" "$IMG" bench-crun-probe true 2>&1); then
	crun_ratios=(-ratio cleanroom-1-crun/ctr -ratio cleanroom-1-crun/ctr-crun -ratio cleanroom-1-crun/cleanroom-1)
	crun_cases=(
		"cleanroom-1-crun=env CLEANROOM_BENCH_OCI_BINARY=$CRUN $CR run -f $WORK/ws1/cleanroom.yaml --trace $OUT/traces/onecrun-{run}.jsonl"
		"cleanroom-20-crun=env CLEANROOM_BENCH_OCI_BINARY=$CRUN $CR run -f $WORK/ws20/cleanroom.yaml"
		"ctr-crun=ctr --address $SOCK -n $NS run --rm --runc-binary $CRUN $IMG bench-ctrc-{i} true"
	)
else
	printf '%s\n%s\n' "$("$CRUN" --version | head -1)" "$crun_err" >"$OUT/crun-unavailable.txt"
	log "crun cannot run a container here; its cases are left out: $crun_err"
fi
env -u GOPROXY "$BR" time -rounds "$STARTUP_ROUNDS" -warmup 1 -o "$OUT/startup.json" \
	-ratio cleanroom-1/ctr -ratio cleanroom-1/ctr-hardened -ratio cleanroom-1/runc -ratio ctr/runc \
	-ratio cleanroom-20-group/cleanroom-20 "${crun_ratios[@]}" \
	"cleanroom-1=$CR run -f $WORK/ws1/cleanroom.yaml --trace $OUT/traces/one-{run}.jsonl" \
	"cleanroom-20-group=env CLEANROOM_BENCH_SHIM_GROUP=1 $CR run -f $WORK/ws20/cleanroom.yaml" \
	"${crun_cases[@]}" \
	"cleanroom-20=$CR run -f $WORK/ws20/cleanroom.yaml --trace $OUT/traces/twenty-{run}.jsonl" \
	"cleanroom-10w=$CR run -f $WORK/ws10w/cleanroom.yaml" \
	"ctr=ctr --address $SOCK -n $NS run --rm $IMG bench-ctr-{i} true" \
	"ctr-hardened=ctr --address $SOCK -n $NS run --rm --read-only --seccomp --memory-limit 2147483648 --cpus 2 $IMG bench-ctrh-{i} true" \
	"runc=runc --root $STATE/runc run -b $WORK/bundle bench-runc-{i}" \
	"unshare=unshare -mpnuif --fork true" \
	"go-env=go env GOPROXY"
end

# ---- 2. egress proxy ----------------------------------------------------------------

begin proxy
"$EB" upstream -addr-file "$WORK/up.addr" -tls-addr-file "$WORK/upt.addr" -ca-file "$WORK/up-ca.pem" 2>"$OUT/logs/upstream.log" &
pids+=($!)
wait_file "$WORK/up.addr"
wait_file "$WORK/upt.addr"
UP=$(cat "$WORK/up.addr")
UPPORT=${UP##*:}
UPT=$(cat "$WORK/upt.addr") # the same origin over HTTPS, for CONNECT tunnels
UPTPORT=${UPT##*:}
RULE="127.0.0.1:$UPPORT" # an IP rule: names never reach loopback
RULET="127.0.0.1:$UPTPORT"

# Peak RSS first, on a fresh proxy process at the runner's defaults.
"$EB" proxy -addr-file "$WORK/rss.addr" -allow "$RULE" -events "$WORK/events-rss.jsonl" 2>"$OUT/logs/proxy-rss.log" &
rss_pid=$!
pids+=("$rss_pid")
wait_file "$WORK/rss.addr"
"$EB" rss -pid "$rss_pid" -upstream "$UP" -proxy "$(cat "$WORK/rss.addr")" -bytes $((2 << 30)) -o "$OUT/proxy-rss.json"
kill "$rss_pid"

# The proxy under comparison, with room for 500 connections.
"$EB" proxy -addr-file "$WORK/px.addr" -allow "$RULE" -allow "$RULET" -max-conns 1024 -events "$WORK/events.jsonl" 2>"$OUT/logs/proxy.log" &
pids+=($!)
wait_file "$WORK/px.addr"
PX=$(cat "$WORK/px.addr")
# The same proxy at the runner's default MaxConns (256).
"$EB" proxy -addr-file "$WORK/pxd.addr" -allow "$RULE" -events "$WORK/events-default.jsonl" 2>"$OUT/logs/proxy-default.log" &
pids+=($!)
wait_file "$WORK/pxd.addr"

# squid with the equivalent allowlist: only 127.0.0.1, the origin's port.
SQ_DIR=$WORK/squid
mkdir -p "$SQ_DIR"
chown proxy:proxy "$SQ_DIR" 2>/dev/null || chmod 777 "$SQ_DIR"
SQPORT=$("$EB" freeport)
cat >"$SQ_DIR/squid.conf" <<EOF
http_port 127.0.0.1:$SQPORT
pid_filename $SQ_DIR/squid.pid
cache_log $SQ_DIR/cache.log
access_log none
cache_store_log none
coredump_dir $SQ_DIR
cache deny all
cache_mem 8 MB
acl bench_src src 127.0.0.1/32
acl bench_up dst 127.0.0.1/32
acl bench_port port $UPPORT $UPTPORT
http_access allow bench_src bench_up bench_port
http_access deny all
icp_port 0
htcp_port 0
pinger_enable off
dns_nameservers 127.0.0.1
visible_hostname cleanroom-bench
forwarded_for delete
max_filedescriptors 8192
shutdown_lifetime 1 seconds
workers 1
EOF
squid -k parse -f "$SQ_DIR/squid.conf" >"$OUT/logs/squid-parse.log" 2>&1 || {
	cat "$OUT/logs/squid-parse.log" >&2
	die "squid rejected its configuration"
}
(
	ulimit -n 16384 2>/dev/null || true
	exec squid -N -f "$SQ_DIR/squid.conf"
) >"$OUT/logs/squid.log" 2>&1 &
pids+=($!)
"$EB" probe -proxy "127.0.0.1:$SQPORT" -url "http://$UP/small" -timeout 30s ||
	die "squid did not answer; see $SQ_DIR/cache.log"
"$EB" probe -proxy "$PX" -url "http://$UP/small" -timeout 10s

"$EB" throughput -upstream "$UP" -bytes $((1 << 30)) -rounds "$STREAM_ROUNDS" -o "$OUT/proxy-throughput.json" \
	"cleanroom=$PX" "squid=127.0.0.1:$SQPORT"
# CONNECT tunnels (HTTPS without inspection): the client speaks TLS to the
# origin through the tunnel; nothing is hashed, the proxy splices.
"$EB" throughput -upstream "$UPT" -ca "$WORK/up-ca.pem" -bytes $((1 << 30)) -rounds "$STREAM_ROUNDS" -o "$OUT/proxy-tunnel.json" \
	"cleanroom=$PX" "squid=127.0.0.1:$SQPORT"
"$EB" latency -upstream "$UP" -concurrency 500 -per-worker 10 -rounds "$LATENCY_ROUNDS" -o "$OUT/proxy-latency.json" \
	"cleanroom=$PX" "squid=127.0.0.1:$SQPORT"
"$EB" latency -upstream "$UP" -concurrency 500 -per-worker 10 -rounds 1 -allow-errors -o "$OUT/proxy-latency-default.json" \
	"cleanroom-default=$(cat "$WORK/pxd.addr")"
cp "$SQ_DIR/cache.log" "$OUT/logs/squid-cache.log" 2>/dev/null || true
stop_pids
end

# ---- 3. workspace hashing ---------------------------------------------------------------

begin hashing
FILES=10000 BYTES=$((1 << 30)) ROUNDS=$HASH_ROUNDS ./runner/manifest/bench_hash.sh 2>&1 | tee "$OUT/hash.txt"
end

# ---- 4. concurrency ------------------------------------------------------------------------

begin concurrency
CONC=$WORK/conc
for k in $(seq 8); do
	mkdir -p "$CONC/ws-$k"
	cp "$WORK/busybox.tar" "$CONC/ws-$k/"
	cat >"$CONC/ws-$k/cleanroom.yaml" <<'EOF'
version: 1
image: oci-archive:./busybox.tar
egress: {allow: []}
steps:
  - name: generate
    run: |
      mkdir -p out
      i=0; while [ $i -lt 200 ]; do echo "line $i of a generated file"; i=$((i+1)); done > out/data.txt
    resources: {memory: 128MiB, cpus: 1, pids: 64}
  - name: package
    run: |
      cd out && tar -cf data.tar data.txt && gzip -n -f data.tar && sha256sum data.tar.gz > SHA256SUMS
    resources: {memory: 128MiB, cpus: 1, pids: 64}
artifacts: ["out/data.tar.gz"]
EOF
done
# Workspaces in $CONC; each run's status, RSS and log go to $OUT/concurrency.
BENCH_CONC_WS=$CONC BENCH_CONC_DIR=$OUT/concurrency CLEANROOM=$WORK/bin/cleanroom \
	CLEANROOM_ARGS="--state-dir $STATE --namespace $NS --containerd-address $SOCK" GOPROXY=off \
	"$BR" time -rounds "$CONC_ROUNDS" -warmup 0 -timeout 10m -o "$OUT/concurrency.json" -ratio seq8/par8 \
	"seq8=bash $here/concurrency.sh seq 8 {run}" \
	"par8=bash $here/concurrency.sh par 8 {run}"
end

# ---- 6. agent throughput ------------------------------------------------------------------------
# Jobs per minute of a one-step pipeline, one agent vs two agents sharing a
# nats-server, fresh agents and server per measurement, interleaved rounds.

begin agent
"$WORK/bin/agentbench" -cleanroom "$WORK/bin/cleanroom" -nats-server "$WORK/bin/nats-server" -image "$WORK/busybox.tar" \
	-namespace "$NS" -state-dir "$STATE" -rounds "${AGENT_ROUNDS:-2}" -jobs "${AGENT_JOBS:-20}" -o "$OUT/agent.json"
end

# ---- 5. micro-benchmarks ----------------------------------------------------------------------

begin micro
(cd sandbox/egress && "$WORK/bin/egress.test" -test.run '^$' -test.bench 'Decide|Classify|NormalizeHost|Record' \
	-test.benchmem -test.count "$MICRO_COUNT") | tee "$OUT/micro-egress.txt"
grep -q '^Benchmark' "$OUT/micro-egress.txt" || die "no micro-benchmark results"
if GOBIN="$WORK/gobin" go install golang.org/x/perf/cmd/benchstat@latest >/dev/null 2>&1; then
	"$WORK/gobin/benchstat" "$OUT/micro-egress.txt" >"$OUT/micro-egress.benchstat.txt" || true
else
	echo "(benchstat could not be installed; raw output kept)" >&2
fi
end

# ---- report -------------------------------------------------------------------------------------

echo "end $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/load.txt"
total=$(since "$t_start")
printf 'total\t%s\n' "$total" >>"$OUT/phases.tsv"
log "report"
"$WORK/bin/benchreport" -in "$OUT" -doc "$DOC" -containerd "$SOCK"
if [ "$(printf '%.0f' "$total")" -gt "$BUDGET_S" ]; then
	die "took $(printf '%.0f' "$total") s, over the ${BUDGET_S} s budget: lower the round counts"
fi
