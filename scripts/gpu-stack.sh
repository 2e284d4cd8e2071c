#!/usr/bin/env bash
# Install torch and the diffusers stack (apps/worker/requirements-diffusers.txt) into the workspace
# venv, for the `diffusers` connector. Run by `make gpu-stack` after `uv sync`.
#
# Why pip and not uv: torch is kept out of uv.lock on purpose. PyPI's Linux x86_64 torch is the
# CUDA build with its nvidia-* wheels (several GB); a CPU-only machine (CI, a laptop) wants the CPU
# build, which these machines keep in a local wheel folder that pip is configured to use and uv
# does not see. So the torch line is a variable:
#   TORCH_SPEC="torch==2.13.0"                       (default) CPU wheel here; CUDA build on a host
#                                                    whose pip reaches PyPI only
#   TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"   a chosen CUDA
# Everything the lock already holds is pinned to the lock's version (pip -c), so `uv run` finds
# the environment as the lock says and changes nothing back.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
PY=.venv/bin/python
UV=${UV:-uv}

if "$PY" -m pip --version >/dev/null 2>&1; then
  PIP=("$PY" -m pip)
else
  # uv's venvs have no pip; the interpreter's own (or ensurepip's) installs into the venv.
  if python3 -m pip --version >/dev/null 2>&1; then
    PIP=(python3 -m pip --python "$PY")
  else
    "$PY" -m ensurepip --default-pip >/dev/null
    PIP=("$PY" -m pip)
  fi
fi

constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
"$UV" export --frozen --all-packages --no-hashes --no-header --no-annotate --no-emit-workspace \
  | grep -E '^[A-Za-z0-9]' | sed -E 's/\[[^]]*\]//' > "$constraints"

# shellcheck disable=SC2086  # TORCH_SPEC may carry pip options
"${PIP[@]}" install --quiet --disable-pip-version-check -c "$constraints" $TORCH_SPEC
"${PIP[@]}" install --quiet --disable-pip-version-check -c "$constraints" \
  -r apps/worker/requirements-diffusers.txt
"$PY" - <<'PY'
import diffusers, peft, torch, transformers
print(f"gpu stack: torch {torch.__version__} (cuda: {torch.cuda.is_available()}), "
      f"diffusers {diffusers.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
PY
