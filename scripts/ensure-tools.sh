#!/usr/bin/env bash
# Install what the project needs on a fresh Debian or Ubuntu machine when it is missing: uv and
# redis-server (Redis >= 7 for Functions; PyPI has none, so it comes from the distribution).
# Idempotent and quiet when all is there.
#
# uv: the one scripts/find-uv.sh finds (PATH, ~/.local/bin), else it is installed from PyPI into a
# private virtual environment, .tools/venv/, which the Makefile finds by itself (no PATH editing).
# A venv, not `pip install`, because Debian's and Ubuntu's Python refuse pip installs outside one
# (PEP 668, "externally-managed-environment").
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/as-root.sh

uv="$(scripts/find-uv.sh)"
if [ ! -x "$uv" ]; then
  venv=.tools/venv
  if ! command -v python3 >/dev/null 2>&1; then apt_install "uv's installer" python3 python3-venv; fi
  # Debian and Ubuntu split venv (ensurepip) out of python3: python3-venv brings it.
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    apt_install "a private virtual environment for uv" python3-venv
  fi
  echo "installing uv into $venv/ (from PyPI)" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check uv
  "$venv/bin/uv" --version >&2
fi

if ! command -v redis-server >/dev/null 2>&1; then
  apt_install "the queue's Redis" redis-server
fi
major=$(redis-server --version | sed -E 's/.*v=([0-9]+).*/\1/')
if [ "$major" -lt 7 ]; then
  echo "redis-server $(redis-server --version) is too old: the queue needs Redis >= 7 (Functions)" >&2
  exit 1
fi
