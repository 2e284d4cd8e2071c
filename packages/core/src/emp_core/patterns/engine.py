"""The classifier: a snapshot of rules compiled once, then pure, fast classification.

Every rule of a connector's view (its own rules, then the global ones, each group by priority,
highest first) goes into one RE2 ``Set``; one linear pass over the message says which rules
match, and the lowest index among them wins. A substring rule is an escaped regex in the same
set, so 1,000 rules cost one scan, not 1,000.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import re2

from emp_core.patterns.rules import (
    MAX_MESSAGE_CHARS,
    Category,
    Classification,
    MatchKind,
    PatternRule,
)

DEFAULT_USER_MESSAGE = "The job failed. We are looking into it; you may try again."

# When no rule matches, an HTTP status the connector saw still says something useful.
_BY_STATUS: dict[int, tuple[Category, bool, str]] = {
    401: (Category.AUTH, False, "The service refused our credentials; an operator must fix it."),
    403: (Category.AUTH, False, "The service refused our credentials; an operator must fix it."),
    408: (Category.TIMEOUT, True, "The service took too long to answer."),
    429: (Category.RATE_LIMIT, True, "The service is busy."),
}

# Large enough for 1,000 rules in one set; RE2 falls back to a slower engine past it, never fails.
_SET_MEMORY = 64 << 20


def truncate(message: str) -> str:
    """The part of a failure message that is matched and stored."""
    return message[:MAX_MESSAGE_CHARS]


def default_classification(http_status: int | None = None) -> Classification:
    """What a failure no rule matches gets: retryable, the queue's backoff."""
    if http_status is not None:
        if http_status in _BY_STATUS:
            category, retryable, text = _BY_STATUS[http_status]
            return Classification(category, retryable, text)
        if 500 <= http_status < 600:
            return Classification(Category.SERVICE_UNAVAILABLE, True, "The service had a problem.")
    return Classification(Category.UNKNOWN, True, DEFAULT_USER_MESSAGE)


def _regex(rule: PatternRule) -> str:
    body = re2.escape(rule.pattern) if rule.match_kind is MatchKind.SUBSTRING else rule.pattern
    return body if rule.case_sensitive else f"(?i:{body})"


def rank(rules: Iterable[PatternRule], connector: str | None) -> list[PatternRule]:
    """The rules that apply to ``connector`` in the order they are tried: the connector's own
    first, then the global ones; within each, higher priority first, then by id."""
    scoped = [r for r in rules if connector is not None and r.connector == connector]
    common = [r for r in rules if r.connector is None]
    key = lambda r: (-r.priority, r.id)  # noqa: E731
    return sorted(scoped, key=key) + sorted(common, key=key)


@dataclass
class _View:
    rules: list[PatternRule]
    matcher: Any  # re2.Set, or None when there are no rules

    def first(self, message: str) -> PatternRule | None:
        if self.matcher is None:
            return None
        hits = self.matcher.Match(message)
        return self.rules[min(hits)] if hits else None


def _compile(rules: list[PatternRule]) -> _View:
    if not rules:
        return _View(rules, None)
    options = re2.Options()
    options.max_mem = _SET_MEMORY
    matcher = re2.Set.SearchSet(options)
    for rule in rules:
        matcher.Add(_regex(rule))
    matcher.Compile()
    return _View(rules, matcher)


@dataclass
class Snapshot:
    """A versioned set of rules, compiled once per connector on first use."""

    version: int
    rules: tuple[PatternRule, ...]
    source: str = "redis"  # redis, starter or memory: where this snapshot came from
    _views: dict[str | None, _View] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, version: int, rules: Iterable[PatternRule], source: str = "memory") -> Snapshot:
        snapshot = cls(version, tuple(rules), source)
        snapshot.warm()
        return snapshot

    def warm(self) -> None:
        """Compile every view now, so no failure pays for compiling."""
        for connector in {None, *(r.connector for r in self.rules)}:
            self._view(connector)

    def _view(self, connector: str | None) -> _View:
        key = connector if any(r.connector == connector for r in self.rules) else None
        view = self._views.get(key)
        if view is None:
            view = self._views[key] = _compile(rank(self.rules, key))
        return view

    def classify(
        self, message: str, *, connector: str | None = None, http_status: int | None = None
    ) -> Classification:
        """Classify one failure message (cut to ``MAX_MESSAGE_CHARS``) from ``connector``."""
        rule = self._view(connector).first(truncate(message))
        if rule is None:
            return default_classification(http_status)
        return Classification(
            category=rule.category, retryable=rule.retryable, user_message=rule.user_message,
            delay_s=rule.retry_delay_s, pattern_id=rule.id, pattern_name=rule.name,
        )  # fmt: skip

    def to_wire(self) -> dict[str, Any]:
        return {"version": self.version, "rules": [r.to_wire() for r in self.rules]}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any], source: str = "redis") -> Snapshot:
        rules = [PatternRule.from_wire(r) for r in data["rules"]]
        return cls.build(int(data["version"]), rules, source)
