"""Error patterns (ADR-009): how a failure is classified, what its user is told and whether it
is retried, as data admins change live.

``rules`` says what a pattern is, ``safety`` refuses dangerous ones, ``engine`` classifies against
a compiled snapshot, ``store`` publishes snapshots to Redis, ``cache`` holds one in a worker,
``counts`` counts matches and folds them into SQL, ``admin`` is the service admins change them
through, ``portable`` reads and writes YAML (and ships the starter set).
"""

from emp_core.patterns.cache import PatternCache
from emp_core.patterns.engine import Snapshot, default_classification, truncate
from emp_core.patterns.rules import (
    CONNECTORS,
    Category,
    Classification,
    MatchKind,
    PatternRule,
    PatternSpec,
)

__all__ = [
    "CONNECTORS",
    "Category",
    "Classification",
    "MatchKind",
    "PatternCache",
    "PatternRule",
    "PatternSpec",
    "Snapshot",
    "default_classification",
    "truncate",
]
