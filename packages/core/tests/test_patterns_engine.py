"""The error-pattern engine: scope order, priority, the default, truncation, and safety."""

from __future__ import annotations

from typing import Any

import pytest
from core_factories import make_rule

from emp_core.errors import InvalidInput
from emp_core.patterns import Category, PatternSpec, Snapshot
from emp_core.patterns.portable import starter_snapshot
from emp_core.patterns.rules import MAX_MESSAGE_CHARS


def make_spec(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "oom",
        "match_kind": "regex",
        "pattern": "out of memory",
        "category": "out_of_memory",
        "retryable": True,
        "user_message": "GPU memory ran out",
        **overrides,
    }


def test_connector_scoped_rules_come_before_global_ones_whatever_the_priority() -> None:
    snapshot = Snapshot.build(1, [
        make_rule(id="global", pattern="timeout", priority=999, category=Category.TIMEOUT),
        make_rule(id="comfy", pattern="timeout", connector="comfyui", priority=-5,
                  category=Category.NETWORK),
    ])  # fmt: skip
    assert snapshot.classify("read timeout", connector="comfyui").pattern_id == "comfy"
    assert snapshot.classify("read timeout", connector="simulation").pattern_id == "global"
    assert snapshot.classify("read timeout").pattern_id == "global"


def test_higher_priority_wins_within_a_scope() -> None:
    snapshot = Snapshot.build(1, [
        make_rule(id="low", pattern="CUDA", priority=1),
        make_rule(id="high", pattern="out of memory", priority=10, retryable=False,
                  retry_delay_s=None),
    ])  # fmt: skip
    outcome = snapshot.classify("CUDA out of memory")
    assert (outcome.pattern_id, outcome.retryable) == ("high", False)


def test_default_when_nothing_matches_and_http_status_informs_it() -> None:
    snapshot = Snapshot.build(1, [make_rule(pattern="boom")])
    outcome = snapshot.classify("something else")
    assert (outcome.pattern_id, outcome.category, outcome.retryable) == (
        None, Category.UNKNOWN, True,
    )  # fmt: skip
    assert snapshot.classify("nope", http_status=429).category is Category.RATE_LIMIT
    assert snapshot.classify("nope", http_status=403).retryable is False
    assert Snapshot.build(0, []).classify("anything").category is Category.UNKNOWN


def test_message_is_truncated_before_matching() -> None:
    snapshot = Snapshot.build(1, [make_rule(pattern="needle")])
    assert snapshot.classify("x" * 10 + "needle").matched
    assert not snapshot.classify("x" * MAX_MESSAGE_CHARS + "needle").matched


def test_case_sensitivity_and_substring_is_literal() -> None:
    snapshot = Snapshot.build(1, [
        make_rule(id="a", pattern="Node (x)", priority=2),
        make_rule(id="b", pattern="EXACT", case_sensitive=True, priority=1),
    ])  # fmt: skip
    assert snapshot.classify("missing node (X) here").pattern_id == "a"
    assert snapshot.classify("missing node x here").pattern_id is None
    assert snapshot.classify("exact").pattern_id is None
    assert snapshot.classify("EXACT").pattern_id == "b"


def test_snapshot_round_trips_the_wire_and_starter_set_classifies() -> None:
    snapshot = Snapshot.build(7, [make_rule(connector="comfyui", retry_delay_s=5.0)])
    again = Snapshot.from_wire(snapshot.to_wire())
    assert again.rules == snapshot.rules
    assert again.version == 7
    starter = starter_snapshot()
    assert starter.version == 0
    assert len(starter.rules) >= 10
    assert starter.classify("torch.cuda.OutOfMemoryError: CUDA out of memory").category is (
        Category.OUT_OF_MEMORY
    )
    assert starter.classify("HTTP 429 Too Many Requests").category is Category.RATE_LIMIT
    assert starter.classify("[Errno 28] No space left on device").category is Category.DISK_FULL


@pytest.mark.parametrize(
    "pattern", ["(a+)+$", "(\\w*)*x", "(a|aa)+b", "^(.*a){2,}", ".*.*=.*", "(x+x+)+y"]
)
def test_catastrophic_regexes_are_refused(pattern: str) -> None:
    with pytest.raises(InvalidInput, match="catastrophic") as caught:
        PatternSpec.parse(make_spec(pattern=pattern))
    assert caught.value.field == "pattern"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"pattern": "   "}, "pattern"),
        ({"pattern": "(unclosed"}, "pattern"),
        ({"pattern": "(a)\\1"}, "pattern"),  # backreference: RE2 does not compile it
        ({"pattern": "x?"}, "pattern"),  # matches every message
        ({"connector": "nonsense"}, "connector"),
        ({"category": "weather"}, "category"),
        ({"user_message": ""}, "user_message"),
        ({"retry_delay_s": -1}, "retry_delay_s"),
    ],
)
def test_bad_specs_name_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        PatternSpec.parse(make_spec(**overrides))
    assert caught.value.field == field


def test_a_substring_may_hold_regex_characters() -> None:
    spec = PatternSpec.parse(make_spec(match_kind="substring", pattern="(a+)+"))
    assert Snapshot.build(1, [spec.rule("s")]).classify("got (a+)+ here").matched
