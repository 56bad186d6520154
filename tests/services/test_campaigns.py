"""Campaigns over the Synthea sample: the preview matches what launch enrols, the
exclusions hold, the holdout is stable, and new referrals enrol by themselves."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from portal.models import (Campaign, CampaignVariant, ChannelConsent, ClinicalFact, Clinic, Enrolment,
                           FactKind, OutboxMessage, Patient)
from portal.services import campaigns
from portal.services.care_gap_rules import open_gaps
from portal.services.errors import InvalidInput
from portal.services.importers import import_synthea
from portal.services.sequence import run_due_steps
from tests.factories import SYNTHEA_SAMPLE

GAPS = ["annual_wellness", "colorectal_screening", "breast_screening", "flu_vaccine"]
NOW = datetime(2026, 11, 30, 16, 0, tzinfo=timezone.utc)



@pytest.fixture()
def sample(db, in_app):
    with in_app():
        import_synthea(db, SYNTHEA_SAMPLE)
    patients = db.scalars(select(Patient)).all()
    for number, patient in enumerate(patients):
        patient.phone = f"+1312555{number:04d}"
        patient.preferred_language = "es" if number % 3 == 0 else "en"
        db.add(ChannelConsent(patient_id=patient.id, channel="sms", granted=True, source="test", updated_at=NOW))
    clinic = Clinic(name="Riverside Clinic", phone="+1 312 555 0100", email="hi@example.org", postal_address="1 St")
    db.add(clinic)
    db.flush()
    db.commit()
    return clinic, patients


def new_campaign(db, clinic, **values) -> Campaign:
    campaign = Campaign(clinic_id=clinic.id, name="Win-back", care_gap_codes=GAPS, channels=["sms"],
                        **{"holdout_percent": 30, **values})
    db.add(campaign)
    db.flush()
    return campaign


def expected_audience(db, patients) -> set[tuple[int, str]]:
    """Worked out one patient at a time with the per-patient rules: a second road to the answer."""
    pairs = set()
    for patient in patients:
        for gap in open_gaps(db, patient.id, NOW.date()):
            if gap.code in GAPS and patient.deceased_on is None:
                pairs.add((patient.id, gap.code))
    return pairs


def test_preview_matches_launch_and_the_rules(db, in_app, sample):
    clinic, patients = sample
    campaign = new_campaign(db, clinic)
    expected = expected_audience(db, patients)
    preview = campaigns.preview_audience(db, campaign, now=NOW)
    assert preview.total == len(expected) > 0
    assert sum(preview.by_tier.values()) == sum(preview.by_language.values()) == preview.total
    assert db.scalar(select(func.count()).select_from(Enrolment)) == 0  # a preview writes nothing

    enrolled = campaigns.launch(db, campaign, now=NOW)
    rows = db.execute(select(Enrolment.patient_id, Enrolment.care_gap_code, Enrolment.holdout)
                      .where(Enrolment.campaign_id == campaign.id)).all()
    assert enrolled == len(rows) == preview.total
    assert {(r.patient_id, r.care_gap_code) for r in rows} == expected
    assert sum(r.holdout for r in rows) == preview.holdout
    assert campaign.status == "active"
    with pytest.raises(InvalidInput):
        campaigns.launch(db, campaign, now=NOW)  # only a draft launches


def test_holdout_is_stable_per_patient_and_never_messaged(db, in_app, sample):
    clinic, _patients = sample
    campaign = new_campaign(db, clinic)
    campaigns.launch(db, campaign, now=NOW)
    held = set(db.scalars(select(Enrolment.patient_id).where(Enrolment.campaign_id == campaign.id,
                                                             Enrolment.holdout.is_(True))))
    assert held == {pid for pid in held if (pid * 7919 + campaign.id * 104729) % 100 < 30}
    assert set(db.scalars(select(Enrolment.patient_id).where(Enrolment.campaign_id == campaign.id,
                                                             Enrolment.next_step_at.is_(None)))) == held
    with in_app():
        for day in (0, 7, 14, 30):
            run_due_steps(db, NOW + timedelta(days=day))
    messaged = set(db.scalars(select(OutboxMessage.patient_id).where(OutboxMessage.campaign_id == campaign.id)))
    assert messaged and not (messaged & held)


def test_exclusions(db, in_app, sample):
    clinic, patients = sample
    living = [p for p in patients if p.deceased_on is None and expected_gap(db, p)]
    opted_out, moved, uncovered, recently = living[:4]
    db.add(ChannelConsent(patient_id=opted_out.id, channel="all", granted=False, source="test", updated_at=NOW))
    moved.moved_away = True
    uncovered.coverage_active = False
    db.add(OutboxMessage(dedupe_key="earlier", patient_id=recently.id, channel="sms", template="invite", locale="en",
                         recipient=recently.phone, body_text="x", status="sent", step=0, sent_at=NOW - timedelta(days=3),
                         next_attempt_at=NOW, created_at=NOW))
    db.flush()
    campaign = new_campaign(db, clinic)
    campaigns.launch(db, campaign, now=NOW)
    enrolled = set(db.scalars(select(Enrolment.patient_id).where(Enrolment.campaign_id == campaign.id)))
    assert not enrolled & {opted_out.id, moved.id, uncovered.id, recently.id}
    assert not enrolled & {p.id for p in patients if p.deceased_on is not None}
    assert enrolled  # the others are there


def expected_gap(db, patient) -> bool:
    return any(g.code in GAPS for g in open_gaps(db, patient.id, NOW.date()))


def test_max_invites_caps_the_audience_highest_tier_first(db, in_app, sample):
    clinic, _patients = sample
    campaign = new_campaign(db, clinic, max_invites=3)
    assert campaigns.launch(db, campaign, now=NOW) == 3
    tiers = db.scalars(select(Enrolment.tier).where(Enrolment.campaign_id == campaign.id)).all()
    assert sorted(tiers) == sorted(tiers)[:3] and min(tiers) == 3  # screening (tier 3) before annual (tier 4)


def test_variants_split_the_audience_by_weight(db, in_app, sample):
    clinic, _patients = sample
    campaign = new_campaign(db, clinic, holdout_percent=0)
    for key in ("A", "B"):
        db.add(CampaignVariant(campaign_id=campaign.id, key=key, weight=1, sms_text={}, email_subject={},
                               email_text={}, offer_text={}))
    db.flush()
    campaigns.launch(db, campaign, now=NOW)
    counts = dict(db.execute(select(Enrolment.variant, func.count()).where(Enrolment.campaign_id == campaign.id)
                             .group_by(Enrolment.variant)).all())
    assert set(counts) == {"A", "B"}


def test_a_new_referral_in_an_import_enrols_the_patient(db, in_app, sample):
    clinic, patients = sample
    campaign = new_campaign(db, clinic, holdout_percent=0)
    campaign.care_gap_codes = ["referral_open"]
    campaigns.launch(db, campaign, now=NOW)
    before = db.scalar(select(func.count()).select_from(Enrolment).where(Enrolment.campaign_id == campaign.id))
    patient = next(p for p in patients if p.deceased_on is None)
    since = NOW - timedelta(minutes=1)
    db.add(ClinicalFact(patient_id=patient.id, kind=FactKind.REFERRAL, code="306206005", system="http://snomed.info/sct",
                        description="Referral", started_on=NOW.date() - timedelta(days=40), status="open",
                        source="csv", source_key="ref-1", imported_at=NOW))
    db.flush()
    assert campaigns.enrol_from_import(db, since, now=NOW) == 1
    assert campaigns.enrol_from_import(db, since, now=NOW) == 0  # once only
    after = db.scalars(select(Enrolment).where(Enrolment.campaign_id == campaign.id)).all()
    assert len(after) == before + 1
    assert any(e.patient_id == patient.id and e.care_gap_code == "referral_open" and e.next_step_at for e in after)


def test_portal_dispatch_once_runs_the_sequence_over_a_fake_clock(app, db, in_app, sample):
    """Launch over the sample; `portal dispatch --once --now ...` sends day 0, then day 7,
    14 and 30 to non-responders only; a patient who books in between gets nothing more."""
    from portal.models import AppointmentType, AppointmentTypeGap, Location, Modality, Provider
    from portal.services.availability import add_slots_for_day
    from portal.services.booking import book_slot

    clinic, _patients = sample
    campaign = new_campaign(db, clinic, holdout_percent=0)
    campaign.care_gap_codes = ["annual_wellness"]
    launched = NOW.replace(hour=15)  # 9:00 in Chicago: inside every patient's sending hours
    campaigns.launch(db, campaign, now=launched)
    db.commit()
    runner = app.test_cli_runner()

    def dispatch(day: int) -> None:
        when = (launched + timedelta(days=day)).isoformat()
        result = runner.invoke(args=["dispatch", "--once", "--now", when])
        assert result.exit_code == 0, result.output

    def steps_sent() -> dict[int, set[int]]:
        db.expire_all()
        sent: dict[int, set[int]] = {}
        for patient_id, step in db.execute(select(OutboxMessage.patient_id, OutboxMessage.step).where(
                OutboxMessage.campaign_id == campaign.id, OutboxMessage.status == "sent")):
            sent.setdefault(step, set()).add(patient_id)
        return sent

    dispatch(0)
    audience = set(db.scalars(select(Enrolment.patient_id).where(Enrolment.campaign_id == campaign.id)))
    assert steps_sent() == {0: audience}

    booker_enrolment = db.scalar(select(Enrolment).where(Enrolment.campaign_id == campaign.id).limit(1))
    location = Location(clinic_id=clinic.id, name="Main", address="1 St", time_zone="America/Chicago",
                        transit_notes={}, parking_notes={})
    provider = Provider(clinic_id=clinic.id, display_name="Dr. A")
    kind = AppointmentType(clinic_id=clinic.id, code="annual-cli", name={"en": "Annual"}, what_to_bring={},
                           preparation={}, modality=Modality.IN_PERSON, duration_minutes=30,
                           gaps=[AppointmentTypeGap(care_gap_code="annual_wellness")])
    db.add_all([location, provider, kind])
    db.flush()
    slot = add_slots_for_day(db, location=location, provider_id=provider.id, modality=Modality.IN_PERSON,
                             day=(datetime.now(timezone.utc) + timedelta(days=5)).date(),
                             start=datetime.min.time().replace(hour=9), end=datetime.min.time().replace(hour=10),
                             minutes=30)[0]
    with in_app():
        book_slot(db, booker_enrolment, kind, slot.id)
    db.commit()

    for day in (7, 14, 30):
        dispatch(day)
    sent = steps_sent()
    responders = {booker_enrolment.patient_id}
    assert sent[1] == sent[2] == sent[3] == audience - responders
