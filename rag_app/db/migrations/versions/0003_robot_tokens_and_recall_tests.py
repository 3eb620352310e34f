"""robot tokens and recall tests

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import rag_app.db.types

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('rag_recall_test',
    sa.Column('created_at', rag_app.db.types.UTCDateTime(), nullable=False),
    sa.Column('updated_at', rag_app.db.types.UTCDateTime(), nullable=False),
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('robot_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('knowledge_ids', sa.JSON(), nullable=False),
    sa.Column('top_k', sa.Integer(), nullable=False),
    sa.Column('mode', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('progress', sa.Integer(), nullable=False),
    sa.Column('total_queries', sa.Integer(), nullable=False),
    sa.Column('queries', sa.JSON(), nullable=False),
    sa.Column('results', sa.JSON(), nullable=True),
    sa.Column('metrics', sa.JSON(), nullable=True),
    sa.Column('error_msg', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['robot_id'], ['rag_robot.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['user_id'], ['rag_user.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    mysql_charset='utf8mb4',
    mysql_collate='utf8mb4_unicode_ci',
    mysql_engine='InnoDB'
    )
    with op.batch_alter_table('rag_recall_test', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rag_recall_test_robot_id'), ['robot_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_rag_recall_test_user_id'), ['user_id'], unique=False)

    op.create_table('rag_robot_token',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('robot_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('token_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('token_hint', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('created_at', rag_app.db.types.UTCDateTime(), nullable=False),
    sa.Column('last_used_at', rag_app.db.types.UTCDateTime(), nullable=True),
    sa.Column('revoked_at', rag_app.db.types.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['robot_id'], ['rag_robot.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['rag_user.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    mysql_charset='utf8mb4',
    mysql_collate='utf8mb4_unicode_ci',
    mysql_engine='InnoDB'
    )
    with op.batch_alter_table('rag_robot_token', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rag_robot_token_robot_id'), ['robot_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_rag_robot_token_token_hash'), ['token_hash'], unique=True)
        batch_op.create_index(batch_op.f('ix_rag_robot_token_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    # Dropping a table drops its indexes (MySQL refuses to drop an index a foreign key uses).
    op.drop_table("rag_robot_token")
    op.drop_table("rag_recall_test")
