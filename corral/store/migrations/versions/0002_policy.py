"""policy: versions, approvals, overrides

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa

from corral.store.tables import UTCDateTime


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('policy_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('document', sa.Text(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('author_email', sa.String(length=320), nullable=False),
    sa.Column('base_version', sa.Integer(), nullable=True),
    sa.Column('rollback_of', sa.Integer(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('activated_at', UTCDateTime(), nullable=True),
    sa.Column('activated_by', sa.String(length=320), nullable=True),
    sa.Column('emergency', sa.Boolean(), nullable=False),
    sa.Column('closed_at', UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_policy_versions'))
    )
    op.create_index('uq_policy_versions_one_active', 'policy_versions', ['status'], unique=True,
                    sqlite_where=sa.text("status = 'active'"), postgresql_where=sa.text("status = 'active'"))
    op.create_table('policy_approvals',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('verdict', sa.String(length=16), nullable=False),
    sa.Column('comment', sa.Text(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['version_id'], ['policy_versions.id'], name=op.f('fk_policy_approvals_version_id_policy_versions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_policy_approvals_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_policy_approvals'))
    )
    op.create_index(op.f('ix_policy_approvals_version_id_user_id'), 'policy_approvals', ['version_id', 'user_id'], unique=True)
    op.create_table('overrides',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('target', sa.String(length=320), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_by', sa.String(length=320), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('expires_at', UTCDateTime(), nullable=False),
    sa.Column('removed_at', UTCDateTime(), nullable=True),
    sa.Column('removed_by', sa.String(length=320), nullable=True),
    sa.Column('expiry_recorded', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_overrides'))
    )
    op.create_index(op.f('ix_overrides_expires_at'), 'overrides', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_overrides_expires_at'), table_name='overrides')
    op.drop_table('overrides')
    op.drop_index(op.f('ix_policy_approvals_version_id_user_id'), table_name='policy_approvals')
    op.drop_table('policy_approvals')
    op.drop_index('uq_policy_versions_one_active', table_name='policy_versions')
    op.drop_table('policy_versions')
