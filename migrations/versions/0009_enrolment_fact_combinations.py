"""enrolment facts ready to count by combination: packed flags, weeks to booking, covering indexes

The dashboard summed ~45 flag expressions over every one of 100 000 rows for each breakdown
(SQLite ~0.7 s a pass). The clock-independent flags are now packed into one integer,
``flags``, so a report groups the rows, in one pass over an index and without sorting, into
their few hundred distinct combinations of (arm, breakdown key, flags, weeks to booking, steps
and channels), counts how many are on which side of the clock in each, and applies each
metric's definition to those rows (portal/services/analytics.py). Two partial indexes on the
durations give percentiles by walking the index to a rank (LIMIT/OFFSET) instead of ranking
every value. Existing rows are rebuilt on their campaign's next report (FACTS_VERSION 2).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 13:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

COMBINATION = ('arm', 'flags', 'weeks_to_book', 'step', 'sent_steps', 'delivered_steps', 'sent_channels',
               'delivered_channels', 'opted_out_channels', 'live_until', 'visit_at')
BREAKDOWNS = ('tier', 'language', 'care_gap', 'channel', 'location_id')
KEYS = ('arm', 'tier', 'language', 'care_gap', 'channel', 'location_id', 'step', 'birth_date')


def upgrade() -> None:
    with op.batch_alter_table('enrolment_fact') as batch:
        batch.add_column(sa.Column('weeks_to_book', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('flags', sa.Integer(), server_default=sa.text('0'), nullable=False))
    op.create_index('ix_enrolment_fact_combinations', 'enrolment_fact', ['campaign_id', *COMBINATION])
    for key in BREAKDOWNS:
        op.create_index(f'ix_enrolment_fact_by_{key}', 'enrolment_fact', ['campaign_id', key, *COMBINATION])
    for column in ('seconds_to_book', 'seconds_to_visit'):
        where = sa.text(f'{column} IS NOT NULL')
        op.create_index(f'ix_enrolment_fact_{column}', 'enrolment_fact', ['campaign_id', column, *KEYS],
                        sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    for column in ('seconds_to_visit', 'seconds_to_book'):
        op.drop_index(f'ix_enrolment_fact_{column}', table_name='enrolment_fact')
    for key in BREAKDOWNS:
        op.drop_index(f'ix_enrolment_fact_by_{key}', table_name='enrolment_fact')
    op.drop_index('ix_enrolment_fact_combinations', table_name='enrolment_fact')
    with op.batch_alter_table('enrolment_fact') as batch:
        batch.drop_column('flags')
        batch.drop_column('weeks_to_book')
