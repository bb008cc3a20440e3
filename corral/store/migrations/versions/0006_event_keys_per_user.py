"""event keys are unique per user: one user's keys cannot shadow another user's events

Revision ID: 0006
Revises: 0005
"""

from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('events') as batch:
        batch.drop_constraint(batch.f('uq_events_event_key'), type_='unique')
        batch.create_unique_constraint(batch.f('uq_events_user_email_event_key'), ['user_email', 'event_key'])


def downgrade() -> None:
    with op.batch_alter_table('events') as batch:
        batch.drop_constraint(batch.f('uq_events_user_email_event_key'), type_='unique')
        batch.create_unique_constraint(batch.f('uq_events_event_key'), ['event_key'])
