#!/usr/bin/env bash
# Build the base image both Dockerfiles start from when no registry can be reached: Debian
# bookworm (minbase) with Python 3.11 from Debian's own packages, made with debootstrap and
# imported into the local podman store. On a machine with a registry, the Dockerfiles' default
# (the pinned upstream python image) is used instead and this script is not needed.
#
#   containers/build-base-image.sh [IMAGE]      default: localhost/hospital-mlops/base-python:3.11-bookworm
#
# The image is rebuilt only when this recipe changes (its sha256 is a label on the image), so a
# second call costs a second; FORCE=1 rebuilds it anyway. Needs root (debootstrap), podman and
# debootstrap.
set -euo pipefail

IMAGE="${1:-localhost/hospital-mlops/base-python:3.11-bookworm}"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PACKAGES=python3,python3-venv,ca-certificates
HERE="$(cd "$(dirname "$0")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$HERE/containers.conf}"

for tool in podman debootstrap; do
    command -v "$tool" >/dev/null || { echo "error: $tool is not installed (apt-get install $tool)" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "error: debootstrap needs root" >&2; exit 1; }

# What makes the root filesystem; bump CLEANUP when the clean-up below changes. Comments and
# messages in this script do not rebuild the base (and with it every image layer).
CLEANUP=1
recipe="$(printf '%s\n' "$SUITE" "$PACKAGES" minbase "$CLEANUP" | sha256sum | cut -c1-16)"
current="$(podman image inspect --format '{{ index .Labels "io.hospital-mlops.base.recipe" }}' "$IMAGE" 2>/dev/null || true)"
if [ "$current" = "$recipe" ] && [ -z "${FORCE:-}" ]; then
    echo "base image $IMAGE is current (recipe $recipe)"
    exit 0
fi

rootfs="$(mktemp -d "${TMPDIR:-/tmp}/hmlops-base.XXXXXX")"
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap $SUITE ($PACKAGES) from $MIRROR ..."
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1 \
    || { tail -20 "$rootfs.log" >&2; echo "error: debootstrap failed (log above)" >&2; exit 1; }
rm -f "$rootfs.log"
# Downloaded packages, package lists and manuals are not needed at run time; each package's
# copyright file (its licence) is kept.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*
find "$rootfs"/usr/share/doc -mindepth 2 ! -name copyright ! -type d -delete 2>/dev/null || true

python="$(chroot "$rootfs" python3 -c 'import platform; print(platform.python_version())')"
tar -C "$rootfs" --numeric-owner -c . | podman import \
    --change 'CMD ["/bin/bash"]' \
    --change "ENV LANG=C.UTF-8" \
    --change "LABEL org.opencontainers.image.title=hospital-mlops-base-python" \
    --change "LABEL org.opencontainers.image.description=Debian $SUITE minbase with Python $python from Debian's packages (containers/build-base-image.sh)" \
    --change "LABEL org.opencontainers.image.licenses=LicenseRef-Debian-packages (each in /usr/share/doc/*/copyright)" \
    --change "LABEL io.hospital-mlops.base.recipe=$recipe" \
    - "$IMAGE" >/dev/null 2>&1
echo "built $IMAGE (Python $python, recipe $recipe)"
