"""docs/architecture.md, checked where a claim is checkable: the Lua functions that build keys,
who uses the pure matching rules, that every process opens Redis through ``connect``, and what
``bench/`` imports."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DOC = (ROOT / "docs" / "architecture.md").read_text()
LUA = (ROOT / "lua" / "emp.lua").read_text()
SOURCES = [p for d in ("apps", "packages") for p in (ROOT / d).glob("*/src/**/*.py")]
# A key built from the key base or a pending set's name, outside the KEYS checks (need_key)
# and outside SPUBLISH (a channel is not a key).
_BUILDS = re.compile(r"(\bbase|\bpending|\bk\.pending)\s*\.\.\s*':")


def _functions_that_build_keys() -> set[str]:
    blocks = {
        m[1]: m[0] for m in re.finditer(r"^local function (\w+)\(.*?^end\b", LUA, re.S | re.M)
    }
    calls = {
        name: {c for c in blocks if c != name and re.search(rf"\b{c}\(", body)}
        for name, body in blocks.items()
    }

    def direct(body: str) -> bool:
        return any(
            _BUILDS.search(line)
            for line in body.splitlines()
            if "need_key(" not in line and "PUBLISH'" not in line
        )

    def builds(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if name in seen:
            return False
        return direct(blocks[name]) or any(builds(c, seen | {name}) for c in calls[name])

    registered = re.findall(r"redis\.register_function\('(\w+)', (\w+)\)", LUA)
    return {public for public, local in registered if local in blocks and builds(local)}


def test_the_documented_key_building_functions_are_those_of_the_lua() -> None:
    sentence = re.search(r"Lua functions that build keys: (.*?)\. ", DOC.replace("\n", " "), re.S)
    assert sentence, "docs/architecture.md lost its list of Lua functions that build keys"
    documented = set(re.findall(r"`(emp_\w+)`", sentence[1]))
    assert documented == _functions_that_build_keys()


def test_the_pure_matching_rules_are_used_outside_tests() -> None:
    users = [
        p for p in SOURCES
        if "emp_core.jobs.matching import" in p.read_text() and p.name != "matching.py"
    ]  # fmt: skip
    assert users, "docs/architecture.md says matching.py serves the studio's wait explanation"
    assert "emp_core/jobs/waiting.py" in DOC
    assert any(p.name == "waiting.py" for p in users)


def _outside_the_redis_package(pattern: str) -> list[str]:
    """Source modules outside ``emp_core/redis/`` whose text matches ``pattern``."""
    redis_package = ROOT / "packages" / "core" / "src" / "emp_core" / "redis"
    return [
        str(p.relative_to(ROOT)) for p in SOURCES
        if redis_package not in p.parents and re.search(pattern, p.read_text())
    ]  # fmt: skip


def test_every_process_opens_redis_through_connect() -> None:
    assert "Every process opens Redis through `emp_core/redis/client.py`" in DOC
    assert _outside_the_redis_package(r"Redis(Cluster)?\.from_url\(") == []


def test_redis_replies_are_decoded_in_one_place() -> None:
    # The client keeps bytes (decode_responses=False); a reply read as text goes through
    # emp_core.redis.text/text_map/text_list, not a helper of each module's own.
    assert "`emp_core/redis/replies.py`" in DOC
    helpers = _outside_the_redis_package(r"\.decode\([^)]*\) if isinstance\(\w+, bytes\)")
    # emp_rpc's is gRPC call metadata, not a Redis reply.
    assert helpers == ["packages/rpc/src/emp_rpc/metadata.py"]


def test_bench_imports_what_the_layout_table_says() -> None:
    row = next(line for line in DOC.splitlines() if line.startswith("| `bench/`"))
    allowed = set(re.findall(r"`(emp_\w+)`", row))
    imported = {
        m for p in (ROOT / "bench").rglob("*.py")
        for m in re.findall(r"^(?:from|import) (emp_\w+)", p.read_text(), re.M)
    }  # fmt: skip
    assert imported <= allowed, imported - allowed
