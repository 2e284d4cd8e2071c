#!/usr/bin/env bash
# Make sure Debian's Chromium is at /usr/bin/chromium for the end-to-end tests (e2e/).
# Playwright's own browser download cannot reach its CDN from these machines, so the suite drives
# the distribution's build through `executable_path`. Idempotent; quiet when it is already there.
set -euo pipefail

[ -x /usr/bin/chromium ] && exit 0

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "need root to run: $*" >&2; return 1; fi; }

echo "installing chromium (Debian) for the end-to-end tests" >&2
as_root apt-get update -qq
DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends chromium >/dev/null

if [ ! -x /usr/bin/chromium ]; then
  echo "chromium was installed but /usr/bin/chromium is missing" >&2
  exit 1
fi
