"""Collections, and each document's owner and collection (issue 17).

`collections`: named sets of documents owned by a user or an organization (`owner`, an
owner key: storage/access.py). `documents.owner`: the owner key of the document's
collection, who may read and change it; every existing document is its uploader's
(`owner = user_id`) and in the default personal collection (`collection_id = 'personal'`,
not a row). Deduplication becomes per collection: (owner, collection_id, content_hash).

Revision ID: 0003_collections
Revises: 0002_ingestion_claims
Create Date: 2026-11-26 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_collections"
down_revision: str | None = "0002_ingestion_claims"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "collections",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("owner", "name", name="uq_collections_owner_name"),
    )
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("owner", sa.String(255), nullable=True))
        batch.add_column(sa.Column("collection_id", sa.String(36), nullable=False, server_default="personal"))
    op.execute("UPDATE documents SET owner = user_id")
    with op.batch_alter_table("documents") as batch:
        batch.alter_column("owner", existing_type=sa.String(255), nullable=False)
        batch.drop_constraint("uq_documents_user_hash", type_="unique")
        batch.create_unique_constraint("uq_documents_collection_hash", ["owner", "collection_id", "content_hash"])
        batch.create_index("ix_documents_owner_created", ["owner", "created_at"])
        batch.create_index("ix_documents_collection", ["collection_id"])


def downgrade() -> None:
    # Only possible while every document is still in its uploader's default collection.
    with op.batch_alter_table("documents") as batch:
        batch.drop_index("ix_documents_collection")
        batch.drop_index("ix_documents_owner_created")
        batch.drop_constraint("uq_documents_collection_hash", type_="unique")
        batch.create_unique_constraint("uq_documents_user_hash", ["user_id", "content_hash"])
        batch.drop_column("collection_id")
        batch.drop_column("owner")
    op.drop_table("collections")
