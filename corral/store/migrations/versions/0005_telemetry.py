"""telemetry: reported events (source, idempotency key), metric rollups

Revision ID: 0005
Revises: 0004
"""

from alembic import op
import sqlalchemy as sa

from corral.store.tables import UTCDateTime


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

DIMENSIONS = ('team', 'user_email', 'client', 'mode', 'model', 'provider', 'tool')


def upgrade() -> None:
    with op.batch_alter_table('events') as batch:
        batch.add_column(sa.Column('source', sa.String(length=32), nullable=True))
        batch.add_column(sa.Column('event_key', sa.String(length=200), nullable=True))
        batch.create_unique_constraint(batch.f('uq_events_event_key'), ['event_key'])
    op.create_table('metric_tasks',
    sa.Column('user_email', sa.String(length=320), nullable=False),
    sa.Column('task_id', sa.String(length=200), nullable=False),
    sa.Column('team', sa.String(length=100), nullable=False),
    sa.Column('client', sa.String(length=50), nullable=False),
    sa.Column('mode', sa.String(length=64), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('provider', sa.String(length=100), nullable=False),
    sa.Column('parent_task_id', sa.String(length=200), nullable=True),
    sa.Column('started_at', UTCDateTime(), nullable=False),
    sa.Column('last_at', UTCDateTime(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=True),
    sa.Column('outcome_at', UTCDateTime(), nullable=True),
    sa.Column('cycle_s', sa.Float(), nullable=True),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.Column('requests', sa.Integer(), nullable=False),
    sa.Column('spend_usd', sa.Float(), nullable=False),
    sa.Column('rollbacks', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('user_email', 'task_id', name=op.f('pk_metric_tasks'))
    )
    op.create_index(op.f('ix_metric_tasks_last_at'), 'metric_tasks', ['last_at'], unique=False)
    op.create_index(op.f('ix_metric_tasks_outcome_at'), 'metric_tasks', ['outcome_at'], unique=False)
    op.create_table('metric_hours',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('hour', UTCDateTime(), nullable=False),
    *(sa.Column(name, sa.String(length=length), nullable=False)
      for name, length in zip(DIMENSIONS, (100, 320, 50, 64, 200, 100, 200))),
    *(sa.Column(name, sa.BigInteger(), nullable=False) for name in ('requests', 'request_errors', 'tokens_in', 'tokens_out')),
    sa.Column('spend_usd', sa.Float(), nullable=False),
    *(sa.Column(name, sa.BigInteger(), nullable=False)
      for name in ('calls', 'call_errors', 'call_timeouts', 'commands', 'command_errors')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_metric_hours'))
    )
    op.create_index('ux_metric_hours_key', 'metric_hours', ['hour', *DIMENSIONS], unique=True)
    op.create_table('metric_progress',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('event_id', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_metric_progress'))
    )


def downgrade() -> None:
    op.drop_table('metric_progress')
    op.drop_index('ux_metric_hours_key', table_name='metric_hours')
    op.drop_table('metric_hours')
    op.drop_index(op.f('ix_metric_tasks_outcome_at'), table_name='metric_tasks')
    op.drop_index(op.f('ix_metric_tasks_last_at'), table_name='metric_tasks')
    op.drop_table('metric_tasks')
    with op.batch_alter_table('events') as batch:
        batch.drop_constraint(batch.f('uq_events_event_key'), type_='unique')
        batch.drop_column('event_key')
        batch.drop_column('source')
