#!/usr/bin/env bash
# Sigstore end-to-end tests of package sign (nested module, see doc.go):
# real Fulcio and timestamp-authority in-process, real Rekor v2 and the real
# cosign v2 CLI as loopback subprocesses. The rekor-server and cosign
# binaries are built on first use with `go install` into
# ${CLEANROOM_TEST_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/cleanroom-test-bin}
# and reused; a cold cosign build takes ~8 min on 2 cores.
# Under CI=true a missing prerequisite fails the tests instead of skipping.
# Extra arguments go to `go test` (e.g. -v, -run Cosign).
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v go >/dev/null; then
	echo "run.sh: go not found on PATH" >&2
	exit 1
fi
exec go test -count=1 -timeout 40m "$@" ./...
