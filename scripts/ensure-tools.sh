#!/usr/bin/env bash
# Install what the project needs on a fresh Debian machine when it is missing: uv and redis-server
# (Redis >= 7 for Functions; PyPI has none, so it comes from Debian). Idempotent and quiet when all
# is there.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "need root to run: $*" >&2; return 1; fi; }

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@"
}

if ! command -v uv >/dev/null 2>&1; then
  echo "installing uv" >&2
  python3 -m pip install --quiet uv || python3 -m pip install --quiet --user uv
fi

if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server (Debian)" >&2
  apt_install redis-server
fi
major=$(redis-server --version | sed -E 's/.*v=([0-9]+).*/\1/')
if [ "$major" -lt 7 ]; then
  echo "redis-server $(redis-server --version) is too old: the queue needs Redis >= 7 (Functions)" >&2
  exit 1
fi
