#!/usr/bin/env bash
# Install the standards' owners' own validators from Debian's packages when they are missing:
# promtool (the `prometheus` package) for the alert rules' unit tests (tests/validators/), and a
# real browser (`chromium` with `chromium-driver`, which selenium in .venv-tools drives) for the
# pages (tests/demo/). Needs root; on a machine that has them this does nothing.
set -euo pipefail
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# fonts-liberation is only recommended, and without a font the screenshots show no text
[ -x /usr/lib/chromium/chromium ] || missing+=(chromium fonts-liberation)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "error: missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root" >&2
    exit 1
fi
echo "installing ${missing[*]} from Debian's packages ..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
