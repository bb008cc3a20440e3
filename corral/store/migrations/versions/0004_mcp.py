"""mcp: tool approvals, tool pins

Revision ID: 0004
Revises: 0003
"""

from alembic import op
import sqlalchemy as sa

from corral.store.tables import UTCDateTime


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('tool_approvals',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('requested_by', sa.String(length=320), nullable=False),
    sa.Column('team', sa.String(length=100), nullable=True),
    sa.Column('key_id', sa.Integer(), nullable=True),
    sa.Column('server', sa.String(length=100), nullable=False),
    sa.Column('tool', sa.String(length=200), nullable=False),
    sa.Column('tool_class', sa.String(length=16), nullable=False),
    sa.Column('arguments', sa.JSON(), nullable=False),
    sa.Column('arguments_sha256', sa.String(length=64), nullable=False),
    sa.Column('rules', sa.JSON(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('task_id', sa.String(length=200), nullable=True),
    sa.Column('mode', sa.String(length=100), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('expires_at', UTCDateTime(), nullable=False),
    sa.Column('decided_by', sa.String(length=320), nullable=True),
    sa.Column('decided_at', UTCDateTime(), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tool_approvals'))
    )
    op.create_index(op.f('ix_tool_approvals_status_id'), 'tool_approvals', ['status', 'id'], unique=False)
    op.create_table('tool_pins',
    sa.Column('server', sa.String(length=100), nullable=False),
    sa.Column('tool', sa.String(length=200), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('definition', sa.JSON(), nullable=False),
    sa.Column('pinned_by', sa.String(length=320), nullable=False),
    sa.Column('pinned_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('server', 'tool', name=op.f('pk_tool_pins'))
    )


def downgrade() -> None:
    op.drop_table('tool_pins')
    op.drop_index(op.f('ix_tool_approvals_status_id'), table_name='tool_approvals')
    op.drop_table('tool_approvals')
