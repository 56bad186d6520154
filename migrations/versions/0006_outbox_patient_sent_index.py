"""outbox messages by patient and send time

The audience build excludes anyone a campaign contacted in the last `recontact_days`
(NOT EXISTS over outbox_message by patient_id and sent_at), and the dispatcher counts
each patient's recent messages for the frequency caps. Without an index on
patient_id, SQLite ran that NOT EXISTS as a scan of every sent message for every
patient: the 1 000 000-patient audience build did not finish in minutes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 10:15:00
"""
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_outbox_message_patient_sent', 'outbox_message', ['patient_id', 'sent_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_outbox_message_patient_sent', table_name='outbox_message')
