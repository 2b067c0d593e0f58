"""Enumerations and small value rules of the domain."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from aisc.domain.errors import ValidationError


class OrgCategory(StrEnum):
    UNIVERSITY = "university"
    RESEARCH_INSTITUTE = "research_institute"
    STARTUP = "startup"
    ENTERPRISE = "enterprise"
    GOVERNMENT = "government"


class Role(StrEnum):
    APPLICANT = "applicant"
    REVIEWER = "reviewer"
    OPERATOR = "operator"
    FUNDER = "funder"


class RiskTier(StrEnum):
    MINIMAL = "minimal"
    LIMITED = "limited"
    HIGH = "high"


class ApplicationStatus(StrEnum):
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"


class JobState(StrEnum):
    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    PREEMPTED = "preempted"

    @property
    def is_final(self) -> bool:
        return self in FINAL_JOB_STATES

    @property
    def is_active(self) -> bool:
        """Holds GPUs and a reservation."""
        return self in (JobState.STARTING, JobState.RUNNING)


FINAL_JOB_STATES = frozenset(
    {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT}
)

RUBRIC_TOTAL = 100
SCORE_MIN, SCORE_MAX = 0, 10
MAX_TIME_LIMIT_S = 14 * 24 * 3600


def validate_rubric(weights: Mapping[str, int]) -> dict[str, int]:
    """Criteria with integer weights that sum to exactly 100."""
    if not weights:
        raise ValidationError("a scoring rubric needs at least one criterion")
    clean: dict[str, int] = {}
    for name, weight in weights.items():
        key = name.strip()
        if not key:
            raise ValidationError("rubric criterion names cannot be empty")
        if key in clean:
            raise ValidationError(f"rubric criterion {key!r} appears twice")
        if not isinstance(weight, int) or isinstance(weight, bool) or weight <= 0:
            raise ValidationError(f"rubric weight of {key!r} must be a positive whole number")
        clean[key] = weight
    total = sum(clean.values())
    if total != RUBRIC_TOTAL:
        raise ValidationError(f"rubric weights must sum to {RUBRIC_TOTAL}, not {total}")
    return clean


def validate_scores(rubric: Mapping[str, int], scores: Mapping[str, int]) -> dict[str, int]:
    """Every criterion scored, none unknown, each score within 0..10."""
    missing = sorted(set(rubric) - set(scores))
    unknown = sorted(set(scores) - set(rubric))
    if missing:
        raise ValidationError(f"missing scores for: {', '.join(missing)}")
    if unknown:
        raise ValidationError(f"unknown criteria: {', '.join(unknown)}")
    for name, score in scores.items():
        if (
            not isinstance(score, int)
            or isinstance(score, bool)
            or not SCORE_MIN <= score <= SCORE_MAX
        ):
            raise ValidationError(
                f"score for {name!r} must be a whole number from {SCORE_MIN} to {SCORE_MAX}"
            )
    return dict(scores)


def weighted_score(rubric: Mapping[str, int], scores: Mapping[str, int]) -> float:
    """0..100: each criterion's score out of 10 times its weight. For display and ranking only."""
    return sum(rubric[name] * scores[name] for name in rubric) / SCORE_MAX
