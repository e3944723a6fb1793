#!/usr/bin/env bash
# make demo: build the example image from Debian's busybox-static, run
# examples/hello in real sandboxes, and show what the run wrote.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/cleanroom}
EX=examples/hello

echo "==> building the step image from Debian's busybox-static"
go run ./internal/cmd/mkbusybox -o "$EX/images/builder.tar"

echo "==> cleanroom run -f $EX/cleanroom.yaml"
"$BIN" run -f "$EX/cleanroom.yaml"

echo
echo "==> outputs in $EX/.cleanroom/"
ls -l "$EX/.cleanroom" "$EX/.cleanroom/logs"
echo "artifact: $EX/out/hello.tar.gz ($(sha256sum "$EX/out/hello.tar.gz" | cut -d' ' -f1))"
