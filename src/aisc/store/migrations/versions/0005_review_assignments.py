"""operators assign reviewers to applications

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from aisc.store.types import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "review_assignments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("application_id", sa.Integer(), nullable=False),
        sa.Column("reviewer_id", sa.Integer(), nullable=False),
        sa.Column("assigned_by", sa.Integer(), nullable=False),
        sa.Column("assigned_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["applications.id"],
            name=op.f("fk_review_assignments_application_id_applications"),
        ),
        sa.ForeignKeyConstraint(
            ["reviewer_id"], ["users.id"], name=op.f("fk_review_assignments_reviewer_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["assigned_by"], ["users.id"], name=op.f("fk_review_assignments_assigned_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_assignments")),
        sa.UniqueConstraint(
            "application_id", "reviewer_id", name=op.f("uq_review_assignments_application_id")
        ),
    )
    op.create_index(
        op.f("ix_review_assignments_application_id"), "review_assignments", ["application_id"]
    )
    op.create_index(
        op.f("ix_review_assignments_reviewer_id"), "review_assignments", ["reviewer_id"]
    )


def downgrade() -> None:
    op.drop_table("review_assignments")
