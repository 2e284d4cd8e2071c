#!/usr/bin/env bash
# Install Azurite (the Azure Storage emulator the blob tests run against) into .tools/azurite when
# missing. Pinned to 3.35: 3.36+ needs Node >= 21 and Debian 12 ships Node 20. Idempotent and quiet
# when it is already there. Needs node and npm (installed from Debian when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

AZURITE_VERSION="${AZURITE_VERSION:-3.35.0}"
PREFIX=".tools/azurite"
BIN="$PREFIX/node_modules/.bin/azurite-blob"

. scripts/as-root.sh

if ! command -v npm >/dev/null 2>&1; then
  apt_install "the blob-store tests' Azurite" nodejs npm
fi

installed=""
if [ -x "$BIN" ] && [ -f "$PREFIX/node_modules/azurite/package.json" ]; then
  installed=$(node -p "require('./$PREFIX/node_modules/azurite/package.json').version" 2>/dev/null || true)
fi
if [ "$installed" != "$AZURITE_VERSION" ]; then
  echo "installing azurite@$AZURITE_VERSION into $PREFIX" >&2
  mkdir -p "$PREFIX"
  npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >&2
fi
test -x "$BIN"
