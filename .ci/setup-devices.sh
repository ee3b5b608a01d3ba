#!/bin/sh
# Prepare the profiling devices for CI: qemu-user-static and openssh-server from Debian, and
# the arm64 sysroot of the qemu-aarch64 device in its cache folder. Run as root. Safe to run
# again: apt-get skips installed packages and the sysroot build reuses a complete cache.
#
# Environment:
#   PYTHON                    interpreter with CompressBench installed (default: python3)
#   COMPRESSBENCH_QEMU_CACHE  sysroot cache folder to keep between CI runs
#                             (default: ~/.cache/compressbench/qemu-aarch64)
set -eu

PYTHON="${PYTHON:-python3}"

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends qemu-user-static openssh-server openssh-client

# sshd refuses to start without its privilege separation folder, which systemd normally makes.
mkdir -p /run/sshd
chmod 0755 /run/sshd

# The sysroot needs network access to deb.debian.org and PyPI. Without it the qemu tests skip
# with the reason, so a failed build is reported but does not fail this script.
if "$PYTHON" -m benchmark.cli device setup qemu-aarch64 ${COMPRESSBENCH_QEMU_CACHE:+--cache-dir "$COMPRESSBENCH_QEMU_CACHE"}; then
    echo "setup-devices: qemu-aarch64 sysroot ready"
else
    echo "setup-devices: WARNING: building the qemu-aarch64 sysroot failed; the qemu tests will skip" >&2
fi
