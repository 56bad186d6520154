"""The .ics file for a booked visit (RFC 5545, via the icalendar library)."""
from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from flask_babel import get_locale, gettext as _
from icalendar import Calendar, Event

from portal.models import Appointment, Enrolment, Modality, localized


def join_link(appointment: Appointment) -> str:
    pattern = appointment.appointment_type.join_url_pattern
    return pattern.replace("{code}", appointment.video_code) if pattern and appointment.video_code else ""


def appointment_ics(appointment: Appointment, enrolment: Enrolment, base_url: str) -> bytes:
    """One VEVENT in UTC, so every calendar app shows the right local time."""
    clinic = enrolment.campaign.clinic
    slot = appointment.slot
    locale = str(get_locale())
    calendar = Calendar()
    calendar.add("prodid", "-//Win-back portal//EN")
    calendar.add("version", "2.0")
    calendar.add("method", "PUBLISH")
    event = Event()
    event.add("uid", f"appointment-{appointment.id}@{urlsplit(base_url).hostname or 'portal'}")
    event.add("dtstamp", appointment.booked_at)
    event.add("dtstart", slot.starts_at)
    event.add("dtend", slot.starts_at + timedelta(minutes=appointment.appointment_type.duration_minutes))
    event.add("summary", _("Visit at %(clinic)s", clinic=clinic.name))
    details = [localized(appointment.appointment_type.preparation, locale),
               localized(appointment.appointment_type.what_to_bring, locale)]
    if appointment.appointment_type.modality == Modality.TELEHEALTH:
        event.add("location", join_link(appointment))
        details.insert(0, _("Join the video visit: %(link)s", link=join_link(appointment)))
    else:
        event.add("location", f"{slot.location.name}, {slot.location.address}")
    details.append(_("To change or cancel, use the link in your message or call %(phone)s.", phone=clinic.phone))
    event.add("description", "\n".join(part for part in details if part))
    calendar.add_component(event)
    return calendar.to_ical()
