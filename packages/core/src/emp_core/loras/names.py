"""What a LoRA may be called: a display name, never a path.

A name is 1-255 characters, not blank, with no path separator (``/``, ``\\``), no ``..`` and no
control characters. It is shown in lists and progress messages ("downloading my-style.safetensors
40%") and never used to build a storage path: blobs are named by owner and random id.
"""

from __future__ import annotations

import unicodedata

from emp_core.errors import InvalidInput

MAX_NAME = 255


def check_name(name: str, *, field: str = "name") -> str:
    """``name`` stripped of surrounding blanks, or ``InvalidInput`` naming the rule it breaks."""
    name = name.strip()
    if not name:
        raise InvalidInput("a LoRA needs a name", field=field)
    if len(name) > MAX_NAME:
        raise InvalidInput(f"the name is over {MAX_NAME} characters", field=field)
    if "/" in name or "\\" in name:
        raise InvalidInput("the name must not contain '/' or '\\'", field=field)
    if ".." in name:
        raise InvalidInput("the name must not contain '..'", field=field)
    if any(unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp"} for ch in name):
        raise InvalidInput("the name must not contain control characters", field=field)
    return name
