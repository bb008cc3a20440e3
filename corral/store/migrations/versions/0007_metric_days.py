"""metric rollups: sums per day beside the hourly ones, and covering indexes on tasks, so a
month's summary reads thirty day rows per dimension instead of seven hundred hours

Revision ID: 0007
Revises: 0006
"""

from alembic import op
import sqlalchemy as sa

from corral.store.tables import UTCDateTime

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

DIMENSIONS = ('team', 'user_email', 'client', 'mode', 'model', 'provider', 'tool')
MEASURES = ('requests', 'request_errors', 'tokens_in', 'tokens_out', 'spend_usd', 'calls', 'call_errors',
            'call_timeouts', 'commands', 'command_errors')
TASK_DIMENSIONS = DIMENSIONS[:-1]


def upgrade() -> None:
    op.create_table('metric_days',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('day', UTCDateTime(), nullable=False),
    *(sa.Column(name, sa.String(length=length), nullable=False)
      for name, length in zip(DIMENSIONS, (100, 320, 50, 64, 200, 100, 200))),
    *(sa.Column(name, sa.BigInteger(), nullable=False) for name in ('requests', 'request_errors', 'tokens_in', 'tokens_out')),
    sa.Column('spend_usd', sa.Float(), nullable=False),
    *(sa.Column(name, sa.BigInteger(), nullable=False)
      for name in ('calls', 'call_errors', 'call_timeouts', 'commands', 'command_errors')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_metric_days'))
    )
    op.create_index('ux_metric_days_key', 'metric_days', ['day', *DIMENSIONS], unique=True)
    # What has been folded already, summed by day (times are UTC: text on SQLite, timestamptz on PostgreSQL).
    day = ("substr(hour, 1, 10) || ' 00:00:00.000000'" if op.get_bind().dialect.name == 'sqlite'
           else "date_trunc('day', hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'")
    columns = ', '.join(DIMENSIONS)
    op.execute(f"INSERT INTO metric_days (day, {columns}, {', '.join(MEASURES)}) "
               f"SELECT {day}, {columns}, {', '.join(f'sum({name})' for name in MEASURES)} FROM metric_hours "
               f"GROUP BY {day}, {columns}")
    op.drop_index('ix_metric_tasks_outcome_at', table_name='metric_tasks')
    op.drop_index('ix_metric_tasks_last_at', table_name='metric_tasks')
    op.create_index('ix_metric_tasks_ended', 'metric_tasks',
                    ['outcome_at', 'outcome', 'cycle_s', 'rollbacks', *TASK_DIMENSIONS])
    op.create_index('ix_metric_tasks_idle', 'metric_tasks', ['last_at', 'outcome', 'rollbacks', *TASK_DIMENSIONS])
    op.create_index('ix_metric_tasks_cycle', 'metric_tasks', ['outcome', 'cycle_s', 'outcome_at', 'team', 'user_email'])


def downgrade() -> None:
    op.drop_index('ix_metric_tasks_cycle', table_name='metric_tasks')
    op.drop_index('ix_metric_tasks_idle', table_name='metric_tasks')
    op.drop_index('ix_metric_tasks_ended', table_name='metric_tasks')
    op.create_index('ix_metric_tasks_last_at', 'metric_tasks', ['last_at'])
    op.create_index('ix_metric_tasks_outcome_at', 'metric_tasks', ['outcome_at'])
    op.drop_index('ux_metric_days_key', table_name='metric_days')
    op.drop_table('metric_days')
