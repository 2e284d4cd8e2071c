#!/usr/bin/env bash
# Make sure a Chromium is at /usr/bin/chromium for the end-to-end tests (e2e/). Playwright's own
# browser download cannot reach its CDN from these machines, so the suite drives the distribution's
# build through `executable_path`. Debian: its chromium package. Ubuntu ships Chromium only as a
# snap, so there Playwright's own build is linked to /usr/bin/chromium. Idempotent; quiet when it
# is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/as-root.sh

[ -x /usr/bin/chromium ] && exit 0

. /etc/os-release 2>/dev/null || true
if [ "${ID:-}" = "ubuntu" ]; then
  # Ubuntu's chromium package is a snap, whose confinement keeps it from the profile folder that
  # Playwright makes under /tmp: take Playwright's own build (with the libraries it needs, through
  # apt) and link it where the suite looks.
  # (Playwright asks for sudo itself when it installs the libraries as another user.)
  [ -x .venv/bin/playwright ] || "$(scripts/find-uv.sh)" sync --all-packages --locked
  echo "installing Playwright's Chromium for the end-to-end tests (Ubuntu ships chromium as a snap)" >&2
  .venv/bin/playwright install --with-deps chromium
  exe="$(.venv/bin/python -c 'from playwright.sync_api import sync_playwright as s
with s() as p: print(p.chromium.executable_path)')"
  as_root ln -sf "$exe" /usr/bin/chromium
else
  apt_install "the end-to-end tests" chromium
fi

if [ ! -x /usr/bin/chromium ]; then
  echo "chromium was installed but /usr/bin/chromium is missing" >&2
  exit 1
fi
