#!/usr/bin/env bash
# Install what building and running the images needs, from Debian's packages, when it is missing:
# podman, runc (crun does not run here), debootstrap (the local base image), catatonit (the pause
# binary `podman kube play` builds its infra container from; without it every pod fails to
# start). Needs root; on a machine that already has them this does nothing.
set -euo pipefail
missing=()
for tool in podman runc debootstrap catatonit; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "error: ${missing[*]} missing; install them (apt-get install ${missing[*]}) or run as root" >&2
    exit 1
fi
echo "installing ${missing[*]} from Debian's packages ..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends podman runc debootstrap catatonit \
    containernetworking-plugins iptables uidmap >/dev/null
