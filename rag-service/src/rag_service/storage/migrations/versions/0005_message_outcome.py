"""How an answer ended, kept with it (issue 23): `messages.answer_found` and
`messages.generator`, as the chat response gave them (chat/schemas.py `AnswerOutcome`).

Both are NULL on user messages, on answers that did not complete, and on answers saved
before this revision (the history API returns them as null).

Revision ID: 0005_message_outcome
Revises: 0004_account_events_cursor
Create Date: 2026-12-06 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_message_outcome"
down_revision: str | None = "0004_account_events_cursor"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("answer_found", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("generator", sa.String(255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("generator")
        batch.drop_column("answer_found")
