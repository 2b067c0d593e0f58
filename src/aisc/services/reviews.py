"""Committee review: conflicts of interest, then scores against the scheme's weighted rubric."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aisc.domain.errors import Conflict, ConflictOfInterest, NotFound, ValidationError
from aisc.domain.model import ApplicationStatus, Role, validate_scores, weighted_score
from aisc.services import notifications
from aisc.services.context import Actor
from aisc.store.tables import (
    Application,
    ConflictDeclaration,
    Organisation,
    Review,
    ReviewAssignment,
    Scheme,
    User,
)
from aisc.store.uow import UnitOfWork

RECOMMENDATIONS = ("approve", "reject", "revise")


def declare_conflict(
    uow: UnitOfWork, actor: Actor, application_id: int, reason: str
) -> ConflictDeclaration:
    actor.require(Role.REVIEWER)
    if not reason.strip():
        raise ValidationError("say what the conflict of interest is")
    with uow:
        application = _open_application(uow.session, application_id)
        standing = _standing(uow.session, application, actor.user_id)
        if standing.conflict:
            return standing.conflict
        if standing.own_review:
            raise Conflict("you have already reviewed this application; tell the operator")
        declaration = ConflictDeclaration(
            application_id=application.id, reviewer_id=actor.user_id, reason=reason.strip()
        )
        uow.session.add(declaration)
        uow.commit()
        return declaration


def submit_review(
    uow: UnitOfWork,
    actor: Actor,
    application_id: int,
    scores: Mapping[str, int],
    recommendation: str,
    comment: str = "",
) -> Review:
    actor.require(Role.REVIEWER)
    if recommendation not in RECOMMENDATIONS:
        raise ValidationError(f"recommendation must be one of {', '.join(RECOMMENDATIONS)}")
    with uow:
        application = _open_application(uow.session, application_id)
        standing = _standing(uow.session, application, actor.user_id)
        if standing.refusal:
            raise ConflictOfInterest(standing.refusal)
        if standing.own_review:
            raise Conflict("you have already reviewed this application")
        scheme = uow.session.get(Scheme, application.scheme_id)
        assert scheme is not None
        clean = validate_scores(scheme.rubric, scores)
        review = Review(
            application_id=application.id,
            reviewer_id=actor.user_id,
            scores=clean,
            weighted_score=weighted_score(scheme.rubric, clean),
            recommendation=recommendation,
            comment=comment.strip(),
        )
        uow.session.add(review)
        uow.commit()
        return review


def list_reviews(uow: UnitOfWork, actor: Actor, application_id: int) -> list[Review]:
    """Operators and the funder see every review; a reviewer sees only their own."""
    actor.require(Role.OPERATOR, Role.FUNDER, Role.REVIEWER)
    with uow:
        query = select(Review).where(Review.application_id == application_id)
        if actor.role == Role.REVIEWER:
            query = query.where(Review.reviewer_id == actor.user_id)
        return list(uow.session.scalars(query.order_by(Review.id)))


def _open_application(session: Session, application_id: int) -> Application:
    application = session.get(Application, application_id)
    if application is None:
        raise NotFound(f"application {application_id} does not exist")
    if application.status != ApplicationStatus.SUBMITTED.value:
        raise Conflict(f"application {application_id} is already {application.status}")
    return application


# -- assignments ---------------------------------------------------------------------------------


def assign_reviewer(
    uow: UnitOfWork, actor: Actor, application_id: int, reviewer_id: int
) -> ReviewAssignment:
    """An operator asks a reviewer to review an open application; the reviewer is notified.
    A reviewer with a declared conflict, or from the applicant's organisation, cannot be asked."""
    actor.require(Role.OPERATOR)
    with uow:
        application = _open_application(uow.session, application_id)
        reviewer = uow.session.get(User, reviewer_id)
        if reviewer is None or reviewer.role != Role.REVIEWER.value or not reviewer.active:
            raise ValidationError(f"user {reviewer_id} is not an active reviewer")
        standing = _standing(uow.session, application, reviewer.id)
        if standing.same_org:
            raise ConflictOfInterest(f"{reviewer.name} belongs to the applicant's organisation")
        if standing.conflict:
            raise ConflictOfInterest(
                f"{reviewer.name} declared a conflict of interest: {standing.conflict.reason}"
            )
        existing = uow.session.scalar(
            select(ReviewAssignment).where(
                ReviewAssignment.application_id == application.id,
                ReviewAssignment.reviewer_id == reviewer.id,
            )
        )
        if existing:
            return existing
        assignment = ReviewAssignment(
            application_id=application.id, reviewer_id=reviewer.id, assigned_by=actor.user_id
        )
        uow.session.add(assignment)
        notifications.notify(
            uow.session,
            [reviewer.id],
            key=f"assignment:{application.id}",
            kind="assignment",
            subject=f"Please review application {application.id}: {application.title}",
            body=(
                f"The centre's operators ask you to review application {application.id} "
                f"({application.title}). Declare any conflict of interest before you score it."
            ),
            link=f"/review/{application.id}",
        )
        uow.commit()
        return assignment


def unassign_reviewer(uow: UnitOfWork, actor: Actor, application_id: int, reviewer_id: int) -> None:
    actor.require(Role.OPERATOR)
    with uow:
        assignment = uow.session.scalar(
            select(ReviewAssignment).where(
                ReviewAssignment.application_id == application_id,
                ReviewAssignment.reviewer_id == reviewer_id,
            )
        )
        if assignment is None:
            raise NotFound(f"user {reviewer_id} is not assigned to application {application_id}")
        uow.session.delete(assignment)
        uow.commit()


def assigned_reviewers(uow: UnitOfWork, actor: Actor, application_id: int) -> list[User]:
    actor.require(Role.OPERATOR)
    with uow:
        return list(
            uow.session.scalars(
                select(User)
                .join(ReviewAssignment, ReviewAssignment.reviewer_id == User.id)
                .where(ReviewAssignment.application_id == application_id)
                .order_by(User.name)
            )
        )


def reviewers(uow: UnitOfWork, actor: Actor) -> list[User]:
    """Every active reviewer, for an operator choosing whom to ask."""
    actor.require(Role.OPERATOR)
    with uow:
        return list(
            uow.session.scalars(
                select(User)
                .where(User.role == Role.REVIEWER.value, User.active.is_(True))
                .order_by(User.name)
            )
        )


# -- what the portal shows the committee --------------------------------------------------------


def reviews_visible_to(uow: UnitOfWork, actor: Actor, application_id: int) -> list[Review]:
    """Every review of an application, for those allowed to compare them.

    Operators and the funder see them all. A reviewer sees them all once their own review is
    in, and none before, so no one scores with the others' scores in view.
    """
    actor.require(Role.OPERATOR, Role.FUNDER, Role.REVIEWER)
    with uow:
        found = list(
            uow.session.scalars(
                select(Review).where(Review.application_id == application_id).order_by(Review.id)
            )
        )
    if actor.role == Role.REVIEWER and not any(r.reviewer_id == actor.user_id for r in found):
        return []
    return found


@dataclass(frozen=True)
class ReviewerStanding:
    """Where one reviewer stands with one application."""

    own_review: Review | None
    conflict: ConflictDeclaration | None
    same_org: bool

    @property
    def refusal(self) -> str | None:
        """Why this reviewer may not score the application, if they may not."""
        if self.same_org:
            return "you cannot review an application from your own organisation"
        if self.conflict is not None:
            return (
                f"you declared a conflict of interest with this application: {self.conflict.reason}"
            )
        return None


def reviewer_standing(uow: UnitOfWork, actor: Actor, application_id: int) -> ReviewerStanding:
    actor.require(Role.REVIEWER)
    with uow:
        application = uow.session.get(Application, application_id)
        if application is None:
            raise NotFound(f"application {application_id} does not exist")
        return _standing(uow.session, application, actor.user_id)


def _standing(session: Session, application: Application, reviewer_id: int) -> ReviewerStanding:
    """The one place that reads a reviewer's review, declared conflict and organisation for an
    application: the scoring form, reviews, declarations and assignments all follow it."""
    reviewer = session.get(User, reviewer_id)
    own = session.scalar(
        select(Review).where(
            Review.application_id == application.id, Review.reviewer_id == reviewer_id
        )
    )
    conflict = session.scalar(
        select(ConflictDeclaration).where(
            ConflictDeclaration.application_id == application.id,
            ConflictDeclaration.reviewer_id == reviewer_id,
        )
    )
    same_org = (
        reviewer is not None
        and reviewer.org_id is not None
        and reviewer.org_id == application.org_id
    )
    return ReviewerStanding(own, conflict, same_org)


TO_REVIEW, REVIEWED, CONFLICTED = "to_review", "reviewed", "conflict"


@dataclass(frozen=True)
class ReviewItem:
    application: Application
    scheme_name: str
    org_name: str
    reviews: int
    min_reviews: int
    state: str  # TO_REVIEW, REVIEWED or CONFLICTED, for this reviewer
    conflict_reason: str = ""
    assigned: bool = False  # an operator asked this reviewer for it


def reviewer_worklist(uow: UnitOfWork, actor: Actor) -> list[ReviewItem]:
    """A reviewer's applications: open ones still to review (those an operator assigned them
    first), then those they reviewed, then those they have a conflict with (declared, or their
    own organisation's open ones)."""
    actor.require(Role.REVIEWER)
    with uow:
        reviewer = uow.session.get(User, actor.user_id)
        own_org = reviewer.org_id if reviewer is not None else None
        counts: dict[int, int] = {
            app_id: int(n)
            for app_id, n in uow.session.execute(
                select(Review.application_id, func.count()).group_by(Review.application_id)
            ).all()
        }
        reviewed = set(
            uow.session.scalars(
                select(Review.application_id).where(Review.reviewer_id == actor.user_id)
            )
        )
        declared = {
            d.application_id: d.reason
            for d in uow.session.scalars(
                select(ConflictDeclaration).where(ConflictDeclaration.reviewer_id == actor.user_id)
            )
        }
        assigned = set(
            uow.session.scalars(
                select(ReviewAssignment.application_id).where(
                    ReviewAssignment.reviewer_id == actor.user_id
                )
            )
        )
        wanted = set(reviewed) | set(declared)
        rows = uow.session.execute(
            select(Application, Scheme.name, Scheme.min_reviews, Organisation.name)
            .join(Scheme, Scheme.id == Application.scheme_id)
            .join(Organisation, Organisation.id == Application.org_id)
            .where(
                (Application.status == ApplicationStatus.SUBMITTED.value)
                | Application.id.in_(wanted or {0})
            )
            .order_by(Application.submitted_at, Application.id)
        ).all()
    groups: dict[str, list[ReviewItem]] = {TO_REVIEW: [], REVIEWED: [], CONFLICTED: []}
    for application, scheme_name, min_reviews, org_name in rows:
        reason = ""
        if application.id in reviewed:
            state = REVIEWED
        elif application.id in declared:
            state, reason = CONFLICTED, declared[application.id]
        elif own_org is not None and application.org_id == own_org:
            state, reason = CONFLICTED, "the application is from your own organisation"
        else:
            state = TO_REVIEW
        groups[state].append(
            ReviewItem(
                application=application,
                scheme_name=scheme_name,
                org_name=org_name,
                reviews=counts.get(application.id, 0),
                min_reviews=min_reviews,
                state=state,
                conflict_reason=reason,
                assigned=application.id in assigned,
            )
        )
    to_review = sorted(groups[TO_REVIEW], key=lambda item: not item.assigned)  # stable
    return to_review + groups[REVIEWED] + groups[CONFLICTED]


def reviewer_names(uow: UnitOfWork, actor: Actor, reviews: Iterable[Review]) -> dict[int, str]:
    """The names of the reviewers behind reviews the actor may already see."""
    actor.require(Role.OPERATOR, Role.FUNDER, Role.REVIEWER)
    ids = {r.reviewer_id for r in reviews}
    if not ids:
        return {}
    with uow:
        return dict(uow.session.execute(select(User.id, User.name).where(User.id.in_(ids))).all())


def reviews_by_application(uow: UnitOfWork, actor: Actor) -> dict[int, list[Review]]:
    """Every review, grouped by application, for the operators' and the funder's overview."""
    actor.require(Role.OPERATOR, Role.FUNDER)
    grouped: dict[int, list[Review]] = defaultdict(list)
    with uow:
        for review in uow.session.scalars(select(Review).order_by(Review.id)):
            grouped[review.application_id].append(review)
    return dict(grouped)


def conflicts_declared(
    uow: UnitOfWork, actor: Actor, application_id: int
) -> list[tuple[str, ConflictDeclaration]]:
    """Who declared a conflict of interest with an application, and why (operators only)."""
    actor.require(Role.OPERATOR)
    with uow:
        rows = uow.session.execute(
            select(User.name, ConflictDeclaration)
            .join(User, User.id == ConflictDeclaration.reviewer_id)
            .where(ConflictDeclaration.application_id == application_id)
            .order_by(ConflictDeclaration.id)
        ).all()
        return [(name, declaration) for name, declaration in rows]
