"""Every staff look at patient data is written down, and the record can't be rewritten."""
from __future__ import annotations

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import DatabaseError

from portal.extensions import db as portal_db
from portal.models import AuditEntry
from portal.services.errors import AuditIsAppendOnly
from tests.conftest import make_test_app
from tests.factories import add_slots, future_day, invite_patient, make_clinic
from tests.staff_helpers import make_staff, sign_in


def audit_rows(db, **where) -> list[AuditEntry]:
    db.expire_all()
    return list(db.scalars(select(AuditEntry).filter_by(**where).order_by(AuditEntry.id)))


@pytest.mark.parametrize("role", ["scheduler", "coordinator"])
def test_each_view_of_a_patient_record_writes_one_audit_row(db, client, in_app, role):
    setup = make_clinic(db)
    invited = invite_patient(db, in_app, setup)
    account = make_staff(db, in_app, role)
    sign_in(client, account)
    assert client.get(f"/staff/patients/{invited.patient.id}").status_code == 200
    assert client.get(f"/staff/enrolments/{invited.enrolment.id}").status_code == 200
    assert client.get(f"/staff/patients/{invited.patient.id}").status_code == 200
    rows = audit_rows(db, staff_id=account.user.id)
    assert [(r.action, r.record_type, r.record_id) for r in rows] == [
        ("view", "patient", invited.patient.id), ("view", "enrolment", invited.enrolment.id),
        ("view", "patient", invited.patient.id)]
    assert all(r.remote_addr for r in rows) and all(r.occurred_at.tzinfo is not None for r in rows)


def test_behind_a_proxy_the_audit_log_keeps_the_readers_address_and_no_one_else_can_write_it(
        db, client, connection, in_app, database_url):
    """With PORTAL_PROXIES=1 (nginx in front) the address is the one the proxy saw; without a
    proxy configured, an X-Forwarded-For sent by the client itself is ignored."""
    proxied = make_test_app(database_url, PROXIES=1)
    portal_db.bind_factory(proxied, connection[1])
    invited = invite_patient(db, in_app, make_clinic(db))
    account = make_staff(db, in_app, "coordinator")
    seen = {}
    for step, (name, app_client) in enumerate((("proxied", proxied.test_client()), ("direct", client))):
        sign_in(app_client, account, steps_ahead=step)  # a code is good once: the next sign-in needs the next
        response = app_client.get(f"/staff/patients/{invited.patient.id}", headers={"X-Forwarded-For": "203.0.113.7"})
        assert response.status_code == 200
        seen[name] = audit_rows(db, staff_id=account.user.id, action="view")[-1].remote_addr
    assert seen == {"proxied": "203.0.113.7", "direct": "127.0.0.1"}


def test_the_schedule_audits_each_booked_visit_it_shows(db, client, in_app):
    from portal.services.availability import appointment_types_for
    from portal.services.booking import book_slot

    setup = make_clinic(db)
    day = future_day(3)
    slots = add_slots(db, setup, day)
    invited = invite_patient(db, in_app, setup)
    with in_app():
        appointment = book_slot(db, invited.enrolment, appointment_types_for(db, invited.enrolment)[0], slots[0].id)
    db.commit()
    account = make_staff(db, in_app, "scheduler")
    sign_in(client, account)
    page = client.get(f"/staff/schedule?location={setup.location.id}&day={day.isoformat()}").get_data(as_text=True)
    assert "Maria Garcia" in page
    assert [(r.record_type, r.record_id) for r in audit_rows(db, staff_id=account.user.id)] == [
        ("appointment", appointment.id)]


def test_admins_can_search_and_export_the_audit_log(db, client, in_app):
    setup = make_clinic(db)
    invited = invite_patient(db, in_app, setup)
    coordinator = make_staff(db, in_app, "coordinator")
    sign_in(client, coordinator).get(f"/staff/patients/{invited.patient.id}")
    client.post("/staff/logout", data={})

    admin_client = client.application.test_client()
    sign_in(admin_client, make_staff(db, in_app, "admin"))
    page = admin_client.get(f"/staff/audit?staff_email={coordinator.email}").get_data(as_text=True)
    assert f"patient #{invited.patient.id}" in page
    csv = admin_client.get(f"/staff/audit?staff_email={coordinator.email}&format=csv").get_data(as_text=True)
    assert csv.splitlines()[0].startswith("occurred_at_utc,staff,action")
    assert f"{coordinator.email},view,patient,{invited.patient.id}" in csv


def test_the_app_offers_no_way_to_change_the_audit_log(app):
    writable = [rule for rule in app.url_map.iter_rules()
                if "audit" in rule.rule and rule.methods & {"POST", "PUT", "PATCH", "DELETE"}]
    assert writable == []


def test_the_orm_and_the_database_refuse_to_change_an_audit_row(db, in_app):
    staff = make_staff(db, in_app, "admin")
    with in_app():
        from portal.services.audit import audit

        entry = audit(db, staff.user, "view", "patient", 1)
    db.commit()
    entry.action = "nothing to see"
    with pytest.raises(AuditIsAppendOnly):
        db.flush()
    db.rollback()
    db.delete(db.get(AuditEntry, entry.id))
    with pytest.raises(AuditIsAppendOnly):
        db.flush()
    db.rollback()
    for statement in (update(AuditEntry).values(action="edited"), delete(AuditEntry)):
        nested = db.begin_nested()
        with pytest.raises(DatabaseError):
            db.execute(statement.where(AuditEntry.id == entry.id))
        nested.rollback()
    assert db.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "view")) >= 1
