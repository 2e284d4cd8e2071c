"""Patterns as YAML: the starter set shipped in the package, and import/export files.

``yaml`` is imported where it is used: a worker imports this module at start, and PyYAML's import
is a tenth of its start-up, needed only for the starter set (most workers never read it: they find a
published snapshot) and for the admins' import and export."""

from __future__ import annotations

import re
from collections.abc import Iterable
from importlib import resources
from typing import Any

from emp_core.errors import InvalidInput
from emp_core.patterns.engine import Snapshot
from emp_core.patterns.rules import PatternSpec

STARTER_VERSION = 0


def parse_yaml(text: str) -> list[PatternSpec]:
    """Every pattern of a YAML document (``patterns: [...]`` or a bare list), all validated
    before any is used; ``InvalidInput`` names the pattern and field."""
    import yaml

    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"the file is not YAML: {exc}", field="file") from None
    items = data.get("patterns") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise InvalidInput("the file must hold a list under `patterns:`", field="patterns")
    specs = []
    for index, item in enumerate(items):
        try:
            specs.append(PatternSpec.parse(item))
        except InvalidInput as exc:
            exc.message = f"patterns[{index}]: {exc.message}"
            exc.field = f"patterns.{index}.{exc.field}" if exc.field else f"patterns.{index}"
            raise
    return specs


def dump_yaml(specs: Iterable[PatternSpec]) -> str:
    import yaml

    rows = [s.model_dump(mode="json", exclude_defaults=False) for s in specs]
    return str(yaml.safe_dump({"patterns": rows}, sort_keys=False, allow_unicode=True, width=100))


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def starter_specs() -> list[PatternSpec]:
    text = resources.files("emp_core.patterns").joinpath("starter.yaml").read_text("utf-8")
    return parse_yaml(text)


def starter_snapshot() -> Snapshot:
    """The snapshot a worker uses before any has been published (version 0)."""
    rules = [s.rule(f"starter-{_slug(s.name)}") for s in starter_specs() if s.enabled]
    return Snapshot.build(STARTER_VERSION, rules, source="starter")
