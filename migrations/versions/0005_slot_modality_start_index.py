"""slot search by modality and start time, across locations

Video visits are searched across every location of the clinic. The search index
(modality, location_id, starts_at) gives times in order only within one location, so
that search read every open video slot in the 90-day window and sorted them (about
20 000 rows at 100 000 open slots: ~100 ms). With (modality, starts_at) the database
walks the times in order and stops after the first page.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 10:00:00
"""
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_slot_modality_start', 'slot', ['modality', 'starts_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_slot_modality_start', table_name='slot')
