#!/usr/bin/env bash
# make demo-services: a step queries a real Redis (Debian's redis-server,
# packed into an image) running beside it in the step's sealed network.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/cleanroom}
EX=examples/services

echo "==> building the images from Debian's busybox-static, redis-cli and redis-server"
go run ./internal/cmd/mkbusybox -o "$EX/images/builder.tar" -add /usr/bin/redis-cli
go run ./internal/cmd/mkbusybox -o "$EX/images/redis.tar" -add /usr/bin/redis-server -volume /data

echo "==> cleanroom run -f $EX/cleanroom.yaml"
"$BIN" run -f "$EX/cleanroom.yaml"

echo
echo "==> the service's log: $EX/.cleanroom/logs/services/test/cache.log"
tail -n 5 "$EX/.cleanroom/logs/services/test/cache.log"

echo
echo "==> cleanroom verify $EX/out/greeting.txt --provenance …"
"$BIN" verify "$EX/out/greeting.txt" --provenance "$EX/.cleanroom/provenance.intoto.json"
