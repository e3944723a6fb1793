#!/usr/bin/env bash
# make demo: build the example image from Debian's busybox-static, run
# examples/hello in real sandboxes, and show what the run wrote.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/cleanroom}
EX=examples/hello

echo "==> building the step image from Debian's busybox-static"
go run ./internal/cmd/mkbusybox -o "$EX/images/builder.tar"

# A signing key for the demo, made fresh each time (cosign-compatible). It
# lives outside the workspace ($EX), which every step can read.
KEYS=$(mktemp -d "${TMPDIR:-/tmp}/cleanroom-demo-keys.XXXXXX")
trap 'rm -rf "$KEYS"' EXIT
export COSIGN_PASSWORD=demo-password
(cd "$KEYS" && "$OLDPWD/$BIN" keygen >/dev/null)

echo "==> cleanroom run -f $EX/cleanroom.yaml --sign-key $KEYS/cosign.key"
"$BIN" run -f "$EX/cleanroom.yaml" --sign-key "$KEYS/cosign.key"

echo
echo "==> cleanroom verify $EX/out/hello.tar.gz --provenance-bundle … --key $KEYS/cosign.pub"
"$BIN" verify "$EX/out/hello.tar.gz" --provenance-bundle "$EX/.cleanroom/provenance.sigstore.json" --key "$KEYS/cosign.pub"

echo
echo "==> outputs in $EX/.cleanroom/"
ls -l "$EX/.cleanroom" "$EX/.cleanroom/logs" "$EX/.cleanroom/out"
echo "artifact: $EX/out/hello.tar.gz ($(sha256sum "$EX/out/hello.tar.gz" | cut -d' ' -f1))"
