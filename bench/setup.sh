#!/usr/bin/env bash
# Installs what `gwmon-bench` needs beyond the Rust toolchain: etcd (server and etcdctl) from
# Debian, for the side-by-side scenario. Debian bookworm ships etcd 3.4.23
# (`etcd-server` and `etcd-client`). Without it the bench skips the etcd scenario with a
# message and runs everything else.
#
# Usage: bench/setup.sh   (as root, or with sudo available)
set -euo pipefail

if command -v etcd >/dev/null 2>&1; then
    echo "etcd already installed: $(etcd --version | head -n 1)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "setup.sh: need root (or sudo) to apt-get install etcd-server etcd-client" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends etcd-server etcd-client
# The package starts a single-node etcd as a system service where systemd runs; the bench
# starts its own three on free loopback ports and does not use it.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
    $SUDO systemctl stop etcd || true
    $SUDO systemctl disable etcd || true
fi
echo "installed: $(etcd --version | head -n 1)"
