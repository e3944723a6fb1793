#!/usr/bin/env bash
# Installs and starts what cleanroom's demo and tests need on a Debian
# machine, as root: containerd, runc, crun and runsc (gVisor) from Debian,
# busybox-static (the example and test images are built from it), iproute2,
# util-linux, e2fsprogs (the fresh workspace's filesystem), diffoscope-minimal
# (cleanroom rebuild's reports on differing artifacts), chromium (the agent
# web page test) and redis-server (service tests).
# Idempotent: it does nothing that is already done.
set -euo pipefail

log() { echo "setup: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
	log "must run as root (containerd, namespaces and mounts need it)"
	exit 2
fi

need=()
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
# Optional OCI runtimes a pipeline can choose (runtime: crun | runsc);
# make bench also measures crun against runc.
command -v crun >/dev/null || need+=(crun)
command -v runsc >/dev/null || need+=(runsc)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v ip >/dev/null || need+=(iproute2)
command -v flock >/dev/null || need+=(util-linux)
command -v git >/dev/null || need+=(git)
# Each run's fresh workspace is an ext4 filesystem on a loop file.
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v mount >/dev/null || need+=(mount)
# xz decompresses the real gitlab-runner the GitLab tests drive.
command -v xz >/dev/null || need+=(xz-utils)
command -v curl >/dev/null || need+=(curl ca-certificates)
# cleanroom rebuild runs diffoscope on artifacts that differ.
command -v diffoscope >/dev/null || need+=(diffoscope-minimal)
# Service tests run a real Redis server (and redis-cli) from Debian's packages.
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
# The agent's web page test drives a headless Chromium.
command -v chromium >/dev/null || need+=(chromium)
if [ "${#need[@]}" -gt 0 ]; then
	log "installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
	# The tests run their own Redis in sandboxes; none is wanted on the host.
	if [[ " ${need[*]} " == *" redis-server "* ]] && command -v systemctl >/dev/null; then
		systemctl disable --now redis-server >/dev/null 2>&1 || true
	fi
fi

SOCK=/run/containerd/containerd.sock
LOG=/var/log/cleanroom-containerd.log
answers() { [ -S "$SOCK" ] && timeout 5 ctr --address "$SOCK" version >/dev/null 2>&1; }
if ! answers; then
	log "starting containerd (log: $LOG)"
	mkdir -p /run/containerd
	# Detached in its own session so that it outlives this script.
	setsid containerd >>"$LOG" 2>&1 < /dev/null &
	for _ in $(seq 1 100); do
		answers && break
		sleep 0.1
	done
	if ! answers; then
		log "containerd did not come up; last lines of $LOG:"
		tail -n 20 "$LOG" >&2
		exit 2
	fi
fi
log "containerd $(ctr --address "$SOCK" version 2>/dev/null | awk '/Version:/{print $2; exit}') answers at $SOCK"
