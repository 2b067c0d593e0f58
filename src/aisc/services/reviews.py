"""Committee review: conflicts of interest, then scores against the scheme's weighted rubric."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from aisc.domain.errors import Conflict, ConflictOfInterest, NotFound, ValidationError
from aisc.domain.model import ApplicationStatus, Role, validate_scores, weighted_score
from aisc.services.context import Actor
from aisc.store.tables import Application, ConflictDeclaration, Review, Scheme, User
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
        existing = uow.session.scalar(
            select(ConflictDeclaration).where(
                ConflictDeclaration.application_id == application.id,
                ConflictDeclaration.reviewer_id == actor.user_id,
            )
        )
        if existing:
            return existing
        if uow.session.scalar(
            select(Review).where(
                Review.application_id == application.id, Review.reviewer_id == actor.user_id
            )
        ):
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
        reviewer = uow.session.get(User, actor.user_id)
        assert reviewer is not None
        if reviewer.org_id is not None and reviewer.org_id == application.org_id:
            raise ConflictOfInterest("you cannot review an application from your own organisation")
        declared = uow.session.scalar(
            select(ConflictDeclaration).where(
                ConflictDeclaration.application_id == application.id,
                ConflictDeclaration.reviewer_id == actor.user_id,
            )
        )
        if declared:
            raise ConflictOfInterest(
                f"you declared a conflict of interest with this application: {declared.reason}"
            )
        if uow.session.scalar(
            select(Review).where(
                Review.application_id == application.id, Review.reviewer_id == actor.user_id
            )
        ):
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
