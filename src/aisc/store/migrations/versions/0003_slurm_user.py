"""users may carry the Unix user name their Slurm associations are made for

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch_op:
        batch_op.add_column(sa.Column("slurm_user", sa.String(length=64), nullable=True))
        # a unique index, not a constraint: SQLite adds it without rebuilding the table, and
        # many NULLs (users with no Slurm account) are allowed on both databases
        batch_op.create_index(batch_op.f("ix_users_slurm_user"), ["slurm_user"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("users") as batch_op:
        batch_op.drop_index(batch_op.f("ix_users_slurm_user"))
        batch_op.drop_column("slurm_user")
