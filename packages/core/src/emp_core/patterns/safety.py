"""Refusing a pattern that is empty, does not compile, or could backtrack catastrophically.

Matching runs on RE2 (google-re2), whose time is linear in the message, so no saved pattern can
stall a worker. The static check below refuses anyway what would be catastrophic in a
backtracking engine (nested or adjacent overlapping quantifiers): patterns are exported and
imported as YAML, and a pattern library that is safe only under one engine is a trap for the
next tool that reads it. Backreferences and lookaround do not compile in RE2 and are refused too.
"""

from __future__ import annotations

import re

import re2

from emp_core.errors import InvalidInput
from emp_core.patterns.rules import MatchKind

# RE2 refuses a program larger than this (bytes of compiled automaton): `(a{1000}){1000}` is
# linear in time but not in memory.
MAX_PROGRAM_MEMORY = 1 << 20

# A group that repeats and contains a repeat: (a+)+, (\w*)*, (a|aa)+, (.*a){2,}.
_NESTED = re.compile(r"\((?:[^()\\]|\\.)*[+*}](?:[^()\\]|\\.)*\)\s*(?:[+*]|\{\d*,\d*\})")
_ALTERNATION_REPEAT = re.compile(r"\((?:[^()\\]|\\.)*\|(?:[^()\\]|\\.)*\)\s*(?:[+*]|\{\d*,\})")
# Two unbounded wildcards back to back over the same characters: .*.*, \w+\w+.
_ADJACENT = re.compile(r"(\.|\\[wWdDsS])[+*]\??\1[+*]")


def compile_regex(pattern: str, *, case_sensitive: bool) -> re2._Regexp:
    """Compile with RE2; ``InvalidInput`` on field ``pattern`` when it does not."""
    options = re2.Options()
    options.case_sensitive = case_sensitive
    options.max_mem = MAX_PROGRAM_MEMORY
    try:
        return re2.compile(pattern, options=options)
    except re2.error as exc:
        raise InvalidInput(
            f"pattern: the regular expression does not compile ({exc}); backreferences and "
            "lookaround are not supported",
            field="pattern",
        ) from None


def catastrophic(pattern: str) -> str | None:
    """Why this regex could backtrack catastrophically in a backtracking engine, or None."""
    if _NESTED.search(pattern):
        return "a repeated group contains a repeat, like (a+)+"
    if _ALTERNATION_REPEAT.search(pattern):
        return "a repeated group of alternatives, like (a|aa)+, can match one text many ways"
    if _ADJACENT.search(pattern):
        return "two unbounded repeats of the same characters sit side by side, like .*.*"
    return None


def check_pattern(kind: MatchKind, pattern: str, *, case_sensitive: bool) -> None:
    """Raise ``InvalidInput`` (field ``pattern``) for an empty, broken or catastrophic pattern."""
    if not pattern.strip():
        raise InvalidInput("pattern: a pattern cannot be empty", field="pattern")
    if kind is MatchKind.SUBSTRING:
        return
    why = catastrophic(pattern)
    if why is not None:
        raise InvalidInput(
            f"pattern: this regular expression can backtrack catastrophically: {why}",
            field="pattern",
        )
    compile_regex(pattern, case_sensitive=case_sensitive)
    # An expression that matches the empty string matches every failure, hiding the rest.
    if compile_regex(pattern, case_sensitive=case_sensitive).search("") is not None:
        raise InvalidInput(
            "pattern: this regular expression matches an empty message, so it would match "
            "every failure",
            field="pattern",
        )
