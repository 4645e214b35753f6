#!/usr/bin/env bash
# Install PostgreSQL's server from Debian's packages when it is missing (the PostgreSQL tests,
# the monitoring benchmark's PostgreSQL run and `make e2e` start their own throw-away servers
# with it: e2e/local_postgres.py). Needs root; on a machine that has it this does nothing.
set -euo pipefail
if command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "error: PostgreSQL's server is missing; install it (apt-get install postgresql) or run as root" >&2
    exit 1
fi
echo "installing postgresql from Debian's packages ..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
