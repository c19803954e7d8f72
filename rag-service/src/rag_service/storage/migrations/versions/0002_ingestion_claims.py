"""Ingestion claims and quota bookkeeping on documents.

`generation` + `claimed_at`: each ingestion run claims the row (generation + 1) and its
final change must match that generation; `claimed_at` is the claim's heartbeat.
`content_chars`: len(content), summed for the per-user character quota.

Revision ID: 0002_ingestion_claims
Revises: 0001_initial
Create Date: 2026-11-25 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_ingestion_claims"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("content_chars", sa.Integer(), nullable=False, server_default="0"))
        # Existing rows: generation 0 and no claim, so a row left `indexing` is stale at once.
        batch.add_column(sa.Column("generation", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
    # length() counts characters on both SQLite and Postgres, like Python's len().
    op.execute("UPDATE documents SET content_chars = length(content)")


def downgrade() -> None:
    with op.batch_alter_table("documents") as batch:
        batch.drop_column("claimed_at")
        batch.drop_column("generation")
        batch.drop_column("content_chars")
