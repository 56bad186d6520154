"""The day and week view for schedulers (and coordinators, read-only booking help)."""
from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from flask import render_template, request

from portal.extensions import db
from portal.services import availability
from portal.services.day_view import schedule_for
from portal.web.common import commit
from portal.web.staff import bp
from portal.web.staff.access import SCHEDULE_VIEW, record_access, roles_required


def _parse_day(value: str, zone: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        return datetime.now(ZoneInfo(zone)).date()


@bp.get("/schedule")
@roles_required(*SCHEDULE_VIEW)
def schedule():
    clinic_locations = availability.all_locations(db.session)
    if not clinic_locations:
        return render_template("staff/schedule.html", locations=[], rows=[], location=None, day=None, days=1)
    wanted = request.args.get("location", "")
    location = next((loc for loc in clinic_locations if str(loc.id) == wanted), clinic_locations[0])
    day = _parse_day(request.args.get("day", ""), location.time_zone)
    days = 7 if request.args.get("view") == "week" else 1
    rows = schedule_for(db.session, location, day, days=days)
    for row in rows:
        for appointment, _patient in row.appointments:
            record_access("view", "appointment", appointment.id, via="schedule")
    commit()
    return render_template("staff/schedule.html", locations=clinic_locations, location=location, day=day, days=days,
                           rows=rows, previous=day - timedelta(days=days),
                           following=day + timedelta(days=days))
