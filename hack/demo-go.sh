#!/usr/bin/env bash
# make demo-go: build examples/go-module inside a sandbox whose only way out
# is the runner's module proxy endpoint, then show each module fetched with
# its sha256. The module proxy is taken from the host's `go env GOPROXY` at
# run time (never written into the repository) and allowed with --allow.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/cleanroom}
EX=examples/go-module

upstream=""
IFS=',|' read -ra entries <<<"$(go env GOPROXY)"
for e in "${entries[@]}"; do
	case "$e" in direct|off|"") ;; *) upstream=$e; break ;; esac
done
if [ -z "$upstream" ]; then
	echo "demo-go: go env GOPROXY names no proxy; set GOPROXY to a module proxy URL" >&2
	exit 2
fi
hostport=${upstream#*://}
hostport=${hostport%%/*}
host=${hostport%%:*}
allow=(--allow "$hostport")
# A name never reaches a loopback, private or otherwise special address
# unless an IP rule allows that address: where the module proxy resolves to
# such an address (some networks route egress that way), allow exactly the
# addresses it resolves to, on port 443.
for ip in $(getent ahosts "$host" | awk '{print $1}' | sort -u); do
	case "$ip" in *:*) allow+=(--allow "[$ip]:443") ;; *) allow+=(--allow "$ip:443") ;; esac
done

echo "==> building the Go toolchain image (busybox + $(go env GOROOT))"
go run ./internal/cmd/mkbusybox -goroot "$(go env GOROOT)" -o "$EX/images/go.tar"

echo "==> cleanroom run -f $EX/cleanroom.yaml --goproxy-upstream <from go env> --allow <its host> (+ its addresses)"
"$BIN" run -f "$EX/cleanroom.yaml" --goproxy-upstream "$upstream" "${allow[@]}"

echo
echo "==> modules fetched through the proxy, with their digests (egress.jsonl):"
grep '"module"' "$EX/.cleanroom/egress.jsonl" | sed -E 's/.*"url":"([^"]*)".*"sha256":"([0-9a-f]*)".*/\2  \1/' | sed -E 's#https?://[^/]*/#<goproxy>/#'
