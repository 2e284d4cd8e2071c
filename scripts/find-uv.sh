#!/usr/bin/env bash
# Print the uv that make uses: the one on PATH, else one a user-level installer left in
# ~/.local/bin (pipx, `pip install --user`, uv's own installer), else the repository's private one
# under .tools/venv/ (where scripts/ensure-tools.sh installs it when there is none). The path
# printed may not exist yet; ensure-tools.sh runs this same script to decide where to install.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
if command -v uv >/dev/null 2>&1 && uv --version >/dev/null 2>&1; then command -v uv
elif [ -n "${HOME:-}" ] && [ -x "$HOME/.local/bin/uv" ]; then echo "$HOME/.local/bin/uv"
else echo "$repo/.tools/venv/bin/uv"
fi
