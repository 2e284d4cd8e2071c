"""How the worker turns a connector's exception into a failure report.

``classify`` asks the error patterns (ADR-009) the worker holds in memory: the matching
pattern's category, user message, whether to retry and after how long. With no pattern cache
every failure is retryable with the queue's exponential backoff.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from emp_core.patterns import Classification as PatternOutcome
from emp_core.patterns import PatternCache
from emp_worker.connectors.base import Abort, Retry


class Classification(NamedTuple):
    retryable: bool
    delay_s: float | None  # None: the queue's exponential backoff
    # What the error patterns said (category, pattern id, user message), stored with the job.
    outcome: PatternOutcome | None = None


Classifier = Callable[[str], Classification]


def classify(
    message: str, patterns: PatternCache | None = None, connector: str | None = None
) -> Classification:
    """Whether a failure with this message is worth retrying, and after how long."""
    if patterns is None:
        return Classification(retryable=True, delay_s=None)
    outcome = patterns.classify(message, connector=connector)
    return Classification(outcome.retryable, outcome.delay_s, outcome)


class JobTimedOut(Exception):
    """The connector ran past the job's ``timeout_s``."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"timed out after {seconds:g} s")
        self.seconds = seconds


def describe(exc: BaseException) -> str:
    """The failure message stored with the job: the exception's text, or its type's name."""
    text = str(exc).strip()
    return text or type(exc).__name__


def decide(exc: BaseException, classifier: Classifier) -> Classification:
    """``Retry`` and ``Abort`` say what they want; anything else goes through the classifier."""
    if isinstance(exc, Retry):
        return Classification(retryable=True, delay_s=exc.delay_s)
    if isinstance(exc, Abort):
        return Classification(retryable=False, delay_s=None)
    return classifier(describe(exc))
