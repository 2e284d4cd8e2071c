"""What an error pattern is: its closed sets (category, match kind, connector), the rule a
snapshot holds, the input an admin sends, and the classification a failure gets."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from emp_core.errors import InvalidInput, invalid_from_validation

# Failure messages are cut to this many characters before matching and storing as "unmatched":
# the cost of a match grows with the text, and the cause is near the start of a message.
MAX_MESSAGE_CHARS = 2000
MAX_PATTERN_CHARS = 1000
MAX_USER_MESSAGE_CHARS = 1000


class Category(StrEnum):
    OUT_OF_MEMORY = "out_of_memory"
    MODEL_MISSING = "model_missing"
    NODE_MISSING = "node_missing"
    CONTENT_REFUSED = "content_refused"
    TIMEOUT = "timeout"
    NETWORK = "network"
    RATE_LIMIT = "rate_limit"
    AUTH = "auth"
    INVALID_INPUT = "invalid_input"
    SERVICE_UNAVAILABLE = "service_unavailable"
    DISK_FULL = "disk_full"
    UNKNOWN = "unknown"


class MatchKind(StrEnum):
    SUBSTRING = "substring"
    REGEX = "regex"


# The connectors a pattern may be scoped to: every service a worker has (or will soon have) a
# connector for. A scope outside this set would never match, so it is refused at save.
CONNECTORS = frozenset(
    {"simulation", "diffusers", "comfyui", "a1111", "openai", "replicate", "ollama"}
)


@dataclass(frozen=True, slots=True)
class PatternRule:
    """One enabled pattern as a snapshot holds it; ``connector`` None means every connector."""

    id: str
    name: str
    match_kind: MatchKind
    pattern: str
    category: Category
    retryable: bool
    user_message: str
    connector: str | None = None
    case_sensitive: bool = False
    retry_delay_s: float | None = None
    priority: int = 0

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> PatternRule:
        return cls(
            **{
                **data,
                "match_kind": MatchKind(data["match_kind"]),
                "category": Category(data["category"]),
            }
        )


@dataclass(frozen=True, slots=True)
class Classification:
    """How a failure was classified: by a pattern (``pattern_id``) or by the default."""

    category: Category
    retryable: bool
    user_message: str
    delay_s: float | None = None  # None: the queue's exponential backoff
    pattern_id: str | None = None
    pattern_name: str | None = None

    @property
    def matched(self) -> bool:
        return self.pattern_id is not None


Priority = Annotated[int, Field(ge=-1000, le=1000, strict=True)]


class PatternSpec(BaseModel):
    """A pattern as an admin writes it. Unknown fields are refused; ``parse`` raises
    ``InvalidInput`` naming the field, the regular expression's safety included."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: Annotated[str, Field(min_length=1, max_length=200)]
    connector: str | None = None
    match_kind: MatchKind = MatchKind.SUBSTRING
    pattern: Annotated[str, Field(max_length=MAX_PATTERN_CHARS)]
    case_sensitive: bool = False
    category: Category
    retryable: bool
    retry_delay_s: Annotated[float, Field(ge=0, le=86_400)] | None = None
    user_message: Annotated[str, Field(min_length=1, max_length=MAX_USER_MESSAGE_CHARS)]
    priority: Priority = 0
    enabled: bool = True

    @field_validator("connector", mode="before")
    @classmethod
    def _blank_is_global(cls, value: Any) -> Any:
        return None if value in ("", "*", "global") else value

    @model_validator(mode="after")
    def _checked(self) -> PatternSpec:
        # InvalidInput, not ValueError: pydantic reports a model validator's ValueError without
        # a field, and the admin must be told which field to fix.
        if self.connector is not None and self.connector not in CONNECTORS:
            known = ", ".join(sorted(CONNECTORS))
            raise InvalidInput(
                f"connector: unknown connector {self.connector!r}; known: {known}, or none for "
                "every connector",
                field="connector",
            )
        from emp_core.patterns.safety import check_pattern

        check_pattern(self.match_kind, self.pattern, case_sensitive=self.case_sensitive)
        return self

    @classmethod
    def parse(cls, data: Any) -> PatternSpec:
        if isinstance(data, PatternSpec):
            return data
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise invalid_from_validation(exc) from None

    def rule(self, pattern_id: str) -> PatternRule:
        return PatternRule(
            id=pattern_id, name=self.name, match_kind=self.match_kind, pattern=self.pattern,
            category=self.category, retryable=self.retryable, user_message=self.user_message,
            connector=self.connector, case_sensitive=self.case_sensitive,
            retry_delay_s=self.retry_delay_s, priority=self.priority,
        )  # fmt: skip
