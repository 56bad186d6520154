"""Time zones: a 9:00 slot in Chicago is 9:00 on the days the clocks change, on the
times page, on the confirmation and in the .ics (as the right UTC instant); a local
time that doesn't exist is skipped, and making slots again makes no duplicates."""
from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar
from sqlalchemy import func, select

from portal.models import Modality, Slot
from portal.services import availability, booking
from portal.services.availability import add_slots_for_day
from tests.factories import ZONE, make_clinic
from tests.patients import verified_patient

CHICAGO = ZoneInfo(ZONE)
UTC = timezone.utc


def clock_changes(after: date) -> dict[str, date]:
    """The next spring-forward and fall-back days in Chicago, found from the zone rules."""
    found: dict[str, date] = {}
    day = after
    while len(found) < 2:
        day += timedelta(days=1)
        midnight = datetime.combine(day, time(0), CHICAGO).utcoffset()
        noon = datetime.combine(day, time(12), CHICAGO).utcoffset()
        if noon > midnight:
            found.setdefault("spring", day)
        elif noon < midnight:
            found.setdefault("autumn", day)
    return found


CHANGES = clock_changes(datetime.now(UTC).date())
# 9:00 local is 14:00 UTC under daylight time (UTC-5) and 15:00 UTC under standard time (UTC-6).
# Spanish has no "CDT"/"CST" abbreviations in CLDR, so the offset is spelled out instead.
EXPECTED = {"spring": ("140000Z", {"en": "CDT", "es": "CDT"}),
            "autumn": ("150000Z", {"en": "CST", "es": "CST"})}


def local_times(slots) -> list[str]:
    return [s.starts_at.astimezone(CHICAGO).strftime("%H:%M") for s in slots]


@pytest.fixture()
def clock(monkeypatch):
    """Set the clock the booking services read (the DST days may be months away)."""
    def set_now(now: datetime) -> None:
        monkeypatch.setattr(availability, "utcnow", lambda: now)
        monkeypatch.setattr(booking, "utcnow", lambda: now)
    return set_now


def button_text(page: str, slot_id: int) -> str:
    found = re.search(rf'name="slot" value="{slot_id}">.*?<button type="submit">(.*?)<span', page, re.DOTALL)
    assert found, f"slot {slot_id} is not on the page"
    return found.group(1).strip()


@pytest.mark.parametrize("language", ["en", "es"])
@pytest.mark.parametrize("change", ["spring", "autumn"])
def test_nine_oclock_stays_nine_oclock_on_the_day_the_clocks_change(app, db, in_app, clock, change, language):
    day = CHANGES[change]
    setup = make_clinic(db)
    slots = add_slots_for_day(db, location=setup.location, provider_id=setup.provider.id,
                              modality=Modality.IN_PERSON, day=day, start=time(9), end=time(10), minutes=30)
    assert local_times(slots) == ["09:00", "09:30"]
    patient = verified_patient(app, db, in_app, setup, language=language)
    clock(datetime.combine(day - timedelta(days=2), time(12), UTC))

    browser = patient.browser
    browser.get(f"/visit/times?type={setup.in_person.id}&location={setup.location.id}")
    assert browser.status == 200
    nine = button_text(browser.page, slots[0].id)
    assert re.fullmatch(r"9:00\sAM" if language == "en" else r"9:00\sa\.m\.", nine), nine
    assert re.fullmatch(r"9:30\sAM" if language == "en" else r"9:30\sa\.m\.", button_text(browser.page, slots[1].id))
    heading = {"en": day.strftime("%B ") + str(day.day), "es": f"{day.day} de "}[language]
    assert heading in browser.page and ("Sunday" in browser.page or "domingo" in browser.page)

    browser.post("/visit/hold", {"slot": slots[0].id, "appointment_type": setup.in_person.id})
    browser.post("/visit/book", {"slot": slots[0].id, "appointment_type": setup.in_person.id})
    assert browser.status == 200
    utc_time, zone_name = EXPECTED[change]
    assert re.search(r"9:00\s(AM|a\.m\.)\s" + zone_name[language], browser.page), "the confirmation shows 9:00 and the zone"

    ics = browser.client.get("/visit/appointment.ics")
    assert ics.status_code == 200
    text = ics.get_data(as_text=True)
    assert f"DTSTART:{day:%Y%m%d}T{utc_time}" in text
    event = next(c for c in Calendar.from_ical(ics.data).walk("VEVENT"))
    start = event.decoded("dtstart")
    assert start.utcoffset() == timedelta(0)
    assert start.astimezone(CHICAGO).replace(tzinfo=None) == datetime.combine(day, time(9))
    assert event.decoded("dtend") - start == timedelta(minutes=setup.in_person.duration_minutes)


def test_a_local_time_that_does_not_exist_is_skipped_not_shifted(db):
    setup = make_clinic(db)
    day = CHANGES["spring"]
    slots = add_slots_for_day(db, location=setup.location, provider_id=setup.provider.id,
                              modality=Modality.IN_PERSON, day=day, start=time(1), end=time(4), minutes=30)
    assert local_times(slots) == ["01:00", "01:30", "03:00", "03:30"]  # 2:00 and 2:30 never happen that night
    assert [s.local_minutes for s in slots] == [60, 90, 180, 210]
    assert len({s.starts_at for s in slots}) == 4
    assert all(s.ends_at - s.starts_at == timedelta(minutes=30) for s in slots)


def test_the_repeated_hour_in_autumn_is_offered_once(db):
    setup = make_clinic(db)
    day = CHANGES["autumn"]
    slots = add_slots_for_day(db, location=setup.location, provider_id=setup.provider.id,
                              modality=Modality.IN_PERSON, day=day, start=time(0), end=time(3), minutes=30)
    labels = local_times(slots)
    assert labels == sorted(set(labels)), "each wall-clock time at most once, in order"
    assert labels[:3] == ["00:00", "00:30", "01:00"] and "02:30" in labels
    assert len({s.starts_at for s in slots}) == len(slots)


@pytest.mark.parametrize("change", ["spring", "autumn"])
def test_making_the_slots_again_creates_no_duplicates(db, change):
    setup = make_clinic(db)
    day = CHANGES[change]

    def make():
        return add_slots_for_day(db, location=setup.location, provider_id=setup.provider.id,
                                 modality=Modality.IN_PERSON, day=day, start=time(0), end=time(12), minutes=30)

    first = make()
    assert len(first) >= 22
    assert make() == []
    db.flush()
    total = db.scalar(select(func.count()).select_from(Slot).where(Slot.location_id == setup.location.id))
    assert total == len(first)
