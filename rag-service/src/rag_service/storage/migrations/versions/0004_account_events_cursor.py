"""The account events consumer's cursor (issue 22).

`account_events_cursor`: one row per consumer of the auth-service's account events feed
(`erasure`, and `erasure-sweep` which applies each deletion again once every token of the
account has expired: accounts/consumer.py), holding the cursor after the last applied event; NULL reads from the oldest
event the auth-service keeps. The row exists from the start, so replicas only ever update it
(compare-and-set on the cursor).

Revision ID: 0004_account_events_cursor
Revises: 0003_collections
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_account_events_cursor"
down_revision: str | None = "0003_collections"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "account_events_cursor",
        sa.Column("consumer", sa.String(64), primary_key=True),
        sa.Column("cursor", sa.String(255), nullable=True),
        sa.Column("applied", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.execute("INSERT INTO account_events_cursor (consumer, cursor, applied, updated_at)"
               " VALUES ('erasure', NULL, 0, CURRENT_TIMESTAMP), ('erasure-sweep', NULL, 0, CURRENT_TIMESTAMP)")


def downgrade() -> None:
    op.drop_table("account_events_cursor")
