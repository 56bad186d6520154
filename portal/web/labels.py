"""Words for the codes the database stores (statuses, kinds, channels…), in the viewer's language.

Pages show `{{ code|label("family") }}` rather than the raw code, and every page reads a
code the same way because this is the only place that names it. tests/web/test_labels.py
fails when a code of a family has no word here.
"""
from __future__ import annotations

from flask_babel import lazy_gettext as _l

from portal.models import (AppointmentStatus, Channel, EnrolmentStatus, HelpKind, HelpStatus, Modality, OutboxStatus,
                           RefillStatus, Role)
from portal.services import campaigns
from portal.services.care_gaps import CARE_GAPS

LABELS: dict[str, dict[str, object]] = {
    "enrolment_status": {
        EnrolmentStatus.INVITED: _l("invited"), EnrolmentStatus.BOOKED: _l("visit booked"),
        EnrolmentStatus.CLOSED: _l("closed"), EnrolmentStatus.SNOOZED: _l("remind later"),
    },
    "appointment_status": {
        AppointmentStatus.BOOKED: _l("scheduled"), AppointmentStatus.CANCELLED: _l("cancelled"),
        AppointmentStatus.RESCHEDULED: _l("moved to another time"), AppointmentStatus.ATTENDED: _l("attended"),
        AppointmentStatus.NO_SHOW: _l("no-show"),
    },
    "booked_via": {"portal": _l("booked online"), "staff": _l("booked by staff")},
    "slot_state": {"open": _l("open"), "held": _l("held"), "booked": _l("booked"), "blocked": _l("blocked"),
                   "kept_free": _l("kept free (buffer)")},
    "modality": {Modality.IN_PERSON: _l("in person"), Modality.TELEHEALTH: _l("video")},
    "help_kind": {
        HelpKind.COST: _l("Cost or insurance question"), HelpKind.RIDE: _l("Ride to the visit"),
        HelpKind.INTERPRETER: _l("Interpreter"),
    },
    "help_status": {HelpStatus.NEW: _l("new"), HelpStatus.IN_PROGRESS: _l("in progress"),
                    HelpStatus.RESOLVED: _l("resolved")},
    # What the patient sees on their own link: what happens next, in their words.
    "help_status_for_patient": {HelpStatus.NEW: _l("received"), HelpStatus.IN_PROGRESS: _l("someone is working on it"),
                                HelpStatus.RESOLVED: _l("done")},
    "refill_kind": {"refill": _l("Refill request"), "pharmacist": _l("Pharmacist call")},
    "refill_status": {
        RefillStatus.NEW: _l("new"), RefillStatus.SENT_TO_PHARMACY: _l("sent to pharmacy"),
        RefillStatus.DONE: _l("done"), RefillStatus.NEEDS_VISIT: _l("needs a visit"),
    },
    "refill_status_for_patient": {
        RefillStatus.NEW: _l("received"), RefillStatus.SENT_TO_PHARMACY: _l("sent to your pharmacy"),
        RefillStatus.DONE: _l("done"), RefillStatus.NEEDS_VISIT: _l("the care team needs to see you first"),
    },
    "queue_item": {"help": _l("Help request"), "refill": _l("Refill request"), "locked": _l("Locked link"),
                   "call": _l("Call the patient")},
    "campaign_status": {campaigns.DRAFT: _l("draft"), campaigns.ACTIVE: _l("running"), campaigns.PAUSED: _l("paused"),
                        campaigns.STOPPED: _l("stopped")},
    "care_gap": {code: gap.name for code, gap in CARE_GAPS.items()},
    "channel": {Channel.SMS: _l("Text message"), Channel.EMAIL: _l("Email"), Channel.PORTAL: _l("Portal message")},
    "message_template": {
        "invite": _l("Invitation"), "reminder": _l("Reminder"), "code": _l("One-time code"),
        "booking_confirmed": _l("Booking confirmation"), "booking_cancelled": _l("Cancellation notice"),
        "sms_help": _l("Answer to HELP"), "sms_started": _l("Answer to START"), "sms_stopped": _l("Answer to STOP"),
    },
    "outbox_status": {
        OutboxStatus.PENDING: _l("waiting to be sent"), OutboxStatus.SENT: _l("sent"),
        OutboxStatus.CANCELLED: _l("withdrawn before sending"), OutboxStatus.DEAD: _l("could not be sent"),
    },
    "event_kind": {
        "enrolled": _l("added to the campaign"), "sent": _l("message sent"), "link_opened": _l("opened the link"),
        "code_sent": _l("one-time code sent"), "verification_failed": _l("identity check failed"),
        "verified": _l("confirmed who they are"), "locked": _l("link locked"), "unlocked": _l("link unlocked"),
        "slot_held": _l("held a time"), "booked": _l("booked a visit"), "rescheduled": _l("moved the visit"),
        "cancelled": _l("cancelled the visit"), "attended": _l("came to the visit"),
        "no_show": _l("missed the visit (no-show)"), "form_completed": _l("sent the pre-visit form"),
        "help_requested": _l("asked for help"), "help_resolved": _l("help request resolved"),
        "refill_requested": _l("asked for a refill"), "declined": _l("said no or not now"),
        "opted_out": _l("stopped messages"), "opted_in": _l("allowed messages again"),
        "survey_answered": _l("answered the survey"), "escalated": _l("put on the call list"),
        "call_attempt": _l("call logged"),
    },
    "actor": {"patient": _l("patient"), "staff": _l("staff"), "system": _l("automatic")},
    "role": {Role.ADMIN: _l("Admin"), Role.SCHEDULER: _l("Scheduler"), Role.COORDINATOR: _l("Care coordinator"),
             Role.CAMPAIGN_MANAGER: _l("Campaign manager")},
    "language": {"en": _l("English"), "es": _l("Spanish")},
    "audit_action": {"view": _l("viewed"), "search": _l("found in a search"), "update": _l("changed")},
    "record_type": {"patient": _l("patient"), "enrolment": _l("campaign record"), "appointment": _l("visit"),
                    "help_request": _l("help request"), "refill_request": _l("refill request")},
    # The questions of the patient's pre-visit and help forms, and their choices, as staff read them.
    "form_field": {
        "phone": _l("New phone number"), "email": _l("New email"), "insurance_carrier": _l("Insurance company"),
        "insurance_member_id": _l("Member ID"), "reason": _l("Reason for the visit"),
        "medications": _l("Current medicines"), "accessibility": _l("Access needs"),
        "interpreter": _l("Interpreter"), "question": _l("Question"), "pickup_address": _l("Pickup address"),
        "time_window": _l("Pickup time"), "mobility": _l("Mobility needs"), "language": _l("Language"),
    },
    "interpreter_need": {"es": _l("Spanish"), "asl": _l("Sign language"), "other": _l("Another language")},
    "pickup_time": {"morning": _l("Morning"), "afternoon": _l("Afternoon"), "evening": _l("Evening"),
                    "any": _l("Any time")},
    "mobility_need": {"wheelchair": _l("Wheelchair"), "walker": _l("Walker or cane"),
                      "companion": _l("Someone will come with them")},
}

# Form answers whose values are codes of a family; the other answers are free text.
ANSWER_FAMILIES = {"interpreter": "interpreter_need", "time_window": "pickup_time", "mobility": "mobility_need"}


def label(code: str | None, family: str) -> str:
    """The word for a code. A code this module doesn't know yet is shown as it is, so a
    new status shows up plainly instead of breaking the page; an unknown family is a
    typo in a template and raises KeyError."""
    word = LABELS[family].get(code)
    return code if word is None else str(word)


def answer(field: str, value) -> str:
    """A stored form answer as staff read it: chosen options in words, free text as typed."""
    family = ANSWER_FAMILIES.get(field)
    values = [value] if isinstance(value, str) else list(value)
    return ", ".join(label(item, family) if family else item for item in values)


def choices(family: str) -> list[tuple[str, object]]:
    """A family as (code, lazy label) pairs for a form's select, in the order written above."""
    return [(str(code), word) for code, word in LABELS[family].items()]
