"""The audit log of staff access to patient data: append-only.

Rows are only ever inserted. The ORM refuses to flush a change or deletion of an
entry, and on PostgreSQL a trigger (migration 0002) refuses it in SQL too.
"""
from __future__ import annotations

import csv
import io
from datetime import datetime

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from portal.models import AuditEntry, StaffUser, utcnow
from portal.services.errors import AuditIsAppendOnly


def audit(session: Session, staff: StaffUser, action: str, record_type: str, record_id: int, /,
          remote_addr: str = "", **detail) -> AuditEntry:
    """Write one audit row: who, what, which record, when (UTC), from where."""
    entry = AuditEntry(staff_id=staff.id, action=action, record_type=record_type, record_id=record_id,
                       detail=detail, remote_addr=remote_addr[:64], occurred_at=utcnow())
    session.add(entry)
    return entry


@event.listens_for(Session, "before_flush")
def _refuse_audit_changes(session: Session, _context, _instances) -> None:
    for obj in (*session.dirty, *session.deleted):
        if isinstance(obj, AuditEntry) and (obj in session.deleted or session.is_modified(obj)):
            raise AuditIsAppendOnly()


def search_audit(session: Session, *, staff_email: str = "", record_type: str = "", record_id: int | None = None,
                 since: datetime | None = None, until: datetime | None = None, limit: int = 500) -> list[tuple]:
    """Newest first: (entry, staff email) pairs matching every given filter."""
    query = (select(AuditEntry, StaffUser.email).join(StaffUser, StaffUser.id == AuditEntry.staff_id)
             .order_by(AuditEntry.occurred_at.desc(), AuditEntry.id.desc()).limit(limit))
    if staff_email:
        query = query.where(StaffUser.email == staff_email.strip().lower())
    if record_type:
        query = query.where(AuditEntry.record_type == record_type)
    if record_id is not None:
        query = query.where(AuditEntry.record_id == record_id)
    if since is not None:
        query = query.where(AuditEntry.occurred_at >= since)
    if until is not None:
        query = query.where(AuditEntry.occurred_at < until)
    return list(session.execute(query).all())


def audit_csv(rows: list[tuple]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["occurred_at_utc", "staff", "action", "record_type", "record_id", "remote_addr", "detail"])
    for entry, email in rows:
        writer.writerow([entry.occurred_at.isoformat(), email, entry.action, entry.record_type, entry.record_id,
                         entry.remote_addr, ";".join(f"{k}={v}" for k, v in sorted(entry.detail.items()))])
    return out.getvalue()
