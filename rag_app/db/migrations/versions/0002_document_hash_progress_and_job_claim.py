"""document hash, progress and job claim

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import rag_app.db.types

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('rag_document', schema=None) as batch_op:
        batch_op.add_column(sa.Column('content_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        # server_default: rows that exist already get 0 instead of violating NOT NULL.
        batch_op.add_column(sa.Column('progress', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('job_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.add_column(sa.Column('heartbeat_at', rag_app.db.types.UTCDateTime(), nullable=True))
        batch_op.create_index('ix_rag_document_knowledge_hash', ['knowledge_id', 'content_hash'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('rag_document', schema=None) as batch_op:
        batch_op.drop_index('ix_rag_document_knowledge_hash')
        batch_op.drop_column('heartbeat_at')
        batch_op.drop_column('job_id')
        batch_op.drop_column('progress')
        batch_op.drop_column('content_hash')

