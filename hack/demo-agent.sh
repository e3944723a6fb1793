#!/usr/bin/env bash
# make demo-agent: a self-hosted agent on this machine takes a GitHub-style
# push webhook for a repository on a loopback git server, fetches the
# commit through its git allowlist, builds examples/hello in real
# sandboxes, reports the job back to the forge as GitHub commit statuses
# (pending, then success, linking to the job's page), signs the
# provenance with a fresh key, and serves it; the script checks the
# statuses the forge received, downloads the artifact and the signed
# provenance and verifies them with `cleanroom verify`. Everything
# listens on 127.0.0.1 and is stopped on exit. CLEANROOM_TEST_SCOPE, when
# set, gives the run its own state directory and containerd namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${BIN:-bin/cleanroom}
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
WORK=$(mktemp -d /tmp/cleanroom-demo-agent.XXXXXX)
# Its own state directory and namespace, paired: a run reaps what dead
# runs of its namespace left, judged by the run locks in its state dir.
SCOPE=${CLEANROOM_TEST_SCOPE:+-$CLEANROOM_TEST_SCOPE}
STATE_DIR=/run/cleanroom-demo-agent$SCOPE
NAMESPACE=cleanroom-demo-agent$SCOPE
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT
step() { printf '\n==> %s\n' "$*"; }
wait_file() { for _ in $(seq 200); do [ -s "$1" ] && return 0; sleep 0.05; done; echo "timed out waiting for $1" >&2; exit 1; }

step "a repository with the hello pipeline and its image, served by git http-backend on loopback; the forge also takes GitHub's commit-status API"
go run ./internal/cmd/mkbusybox -o "$WORK/builder.tar"
mkdir -p "$WORK/src/images" "$WORK/git"
cp examples/hello/cleanroom.yaml "$WORK/src/"
cp "$WORK/builder.tar" "$WORK/src/images/builder.tar"
export GIT_CONFIG_GLOBAL=/dev/null GIT_AUTHOR_NAME=demo GIT_AUTHOR_EMAIL=demo@example.org GIT_COMMITTER_NAME=demo GIT_COMMITTER_EMAIL=demo@example.org
git -C "$WORK/src" init -q -b main
git -C "$WORK/src" add .
git -C "$WORK/src" commit -q -m "hello"
COMMIT=$(git -C "$WORK/src" rev-parse HEAD)
git clone -q --bare "$WORK/src" "$WORK/git/hello.git"
go build -o "$WORK/demoforge" ./internal/cmd/demoforge
(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/forge.token")
"$WORK/demoforge" serve -root "$WORK/git" -addr-file "$WORK/git.addr" -status-token-file "$WORK/forge.token" &
pids+=($!)
wait_file "$WORK/git.addr"
GIT_ADDR=$(cat "$WORK/git.addr")
REPO="http://$GIT_ADDR/hello.git"
echo "repository $REPO at $COMMIT"
echo "commit-status API http://$GIT_ADDR/repos/demo/hello/statuses/{sha}"

step "agent configuration: webhook with commit status, git allowlist, key signing"
(cd "$WORK" && COSIGN_PASSWORD=demo-password "$BIN" keygen >/dev/null)
printf 'demo-password\n' >"$WORK/cosign.password"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/hook.secret"
PORT=$("$WORK/demoforge" freeport)
cat >"$WORK/agent.yaml" <<EOF
version: 1
listen: 127.0.0.1:$PORT
url: http://127.0.0.1:$PORT   # commit statuses link to url/jobs/<id>
data_dir: $WORK/data
tokens_file: $WORK/tokens.json
source:
  allow: ["$GIT_ADDR"]   # an IP rule: names never reach loopback
  allow_http: true       # the demo's git server is plain HTTP on loopback
signing:
  mode: key
  key: $WORK/cosign.key
  password_file: $WORK/cosign.password
webhooks:
  - name: hello
    provider: github
    secret_file: $WORK/hook.secret
    repository: $REPO
    refs: [refs/heads/main]
    status:                # commit statuses, GitHub's API on the demo forge
      api: http://$GIT_ADDR
      repository: demo/hello
      token_file: $WORK/forge.token
EOF
cat "$WORK/agent.yaml"
TOKEN=$("$BIN" agent token create --tokens-file "$WORK/tokens.json" --name demo --scope read 2>/dev/null)

step "cleanroom agent --config agent.yaml"
"$BIN" --state-dir "$STATE_DIR" --namespace "$NAMESPACE" agent --config "$WORK/agent.yaml" 2>"$WORK/agent.log" &
pids+=($!)
for _ in $(seq 300); do curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "http://127.0.0.1:$PORT/readyz"

step "push webhook (X-Hub-Signature-256) for $COMMIT"
JOB=$("$WORK/demoforge" push -url "http://127.0.0.1:$PORT/hooks/hello" -secret-file "$WORK/hook.secret" -repo "$REPO" -commit "$COMMIT")
echo "job $JOB queued"

step "live log (GET /api/v1/jobs/$JOB/log)"
curl -fsS -N -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/api/v1/jobs/$JOB/log"
STATE=$(curl -fsS -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/api/v1/jobs/$JOB" | sed -n 's/^  "state": "\(.*\)",$/\1/p')
echo "state: $STATE"
[ "$STATE" = succeeded ] || { cat "$WORK/agent.log" >&2; exit 1; }

step "commit statuses the forge received for $COMMIT (GET /repos/demo/hello/commits/$COMMIT/statuses)"
"$WORK/demoforge" statuses -api "http://$GIT_ADDR" -repo demo/hello -commit "$COMMIT" -token-file "$WORK/forge.token" \
	-want pending,success -target "http://127.0.0.1:$PORT/jobs/$JOB" ||
	{ echo "the commit statuses did not arrive as expected" >&2; cat "$WORK/agent.log" >&2; exit 1; }

step "download the artifact and the signed provenance, verify them"
mkdir -p "$WORK/dl"
for f in artifacts/out/hello.tar.gz provenance.intoto.json provenance.sigstore.json; do
	curl -fsS -H "Authorization: Bearer $TOKEN" -o "$WORK/dl/$(basename "$f")" "http://127.0.0.1:$PORT/api/v1/jobs/$JOB/files/$f"
done
ls -l "$WORK/dl"
"$BIN" verify "$WORK/dl/hello.tar.gz" --provenance-bundle "$WORK/dl/provenance.sigstore.json" --key "$WORK/cosign.pub"
grep -q "$COMMIT" "$WORK/dl/provenance.intoto.json" && echo "the provenance names the source: $REPO @ $COMMIT"

step "stopping the agent (SIGTERM drains)"
kill -TERM "${pids[1]}"
wait "${pids[1]}"
tail -n 4 "$WORK/agent.log"
echo
echo "demo-agent: webhook → hermetic build → commit statuses on the forge → signed provenance served and verified"
