"""Campaign managers build, preview, launch, pause, resume and stop campaigns."""
from __future__ import annotations

from datetime import timezone
from zoneinfo import ZoneInfo

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy import select

from portal.extensions import db
from portal.models import Campaign, CampaignVariant, Clinic
from portal.services import availability, campaigns
from portal.services.errors import InvalidInput, MessageRejected
from portal.services.message_linter import SAMPLE_LINK, lint_message, sms_segments
from portal.services.messages import render_message
from portal.web.common import commit
from portal.web.staff import bp
from portal.web.staff.access import CAMPAIGNS, roles_required
from portal.web.staff.forms import CampaignForm, VariantForm, WelcomeForm

PROBLEM_TEXT = {
    "clinical_word": lambda detail: _("names something clinical (%(word)s)", word=detail.replace("\\b", "")),
    "missing_clinic": lambda detail: _("doesn't name the clinic"),
    "missing_link": lambda detail: _("has no {link}"),
    "missing_opt_out": lambda detail: _("doesn't say how to stop (STOP)"),
    "too_long": lambda detail: _("is too long (%(parts)s text messages)", parts=detail),
}


def _campaign(campaign_id: int) -> Campaign:
    return db.session.get(Campaign, campaign_id) or abort(404)


@bp.get("/campaigns")
@roles_required(*CAMPAIGNS)
def campaign_list():
    rows = db.session.scalars(select(Campaign).order_by(Campaign.created_at.desc())).all()
    return render_template("staff/campaigns/list.html", campaigns=rows)


@bp.route("/campaigns/new", methods=["GET", "POST"])
@roles_required(*CAMPAIGNS)
def new_campaign():
    form = CampaignForm()
    if request.method == "POST":
        try:
            step_days = campaigns.parse_step_days(form.step_days.data or "")
        except InvalidInput:
            step_days = None
            form.step_days.errors = [_("Use days that start at 0 and go up, like 0, 7, 14, 30.")]
        if form.validate() and step_days:
            clinic = db.session.scalar(select(Clinic).order_by(Clinic.id).limit(1))
            campaign = Campaign(clinic_id=clinic.id, name=form.name.data, status=campaigns.DRAFT,
                                care_gap_codes=form.care_gap_codes.data, channels=form.channels.data,
                                verification_policy=form.verification_policy.data,
                                step_days=step_days,
                                holdout_percent=form.holdout_percent.data,
                                link_lifetime_days=form.link_lifetime_days.data, max_invites=form.max_invites.data,
                                escalate_tier1=form.escalate_tier1.data)
            db.session.add(campaign)
            db.session.flush()
            db.session.add(CampaignVariant(campaign_id=campaign.id, key="A", label=_("Standard wording"),
                                           sms_text={}, email_subject={}, email_text={}))
            commit()
            return redirect(url_for("staff.campaign", campaign_id=campaign.id), code=303)
        return render_template("staff/campaigns/new.html", form=form), 400
    return render_template("staff/campaigns/new.html", form=form)


def _message_samples(campaign: Campaign) -> list[dict]:
    """Each message as each patient would get it, in each language, with the linter's verdict."""
    context = {"clinic": campaign.clinic, "link": SAMPLE_LINK, "link_days": campaign.link_lifetime_days,
               "unsubscribe_url": "https://portal.example.org/unsubscribe/sample"}
    samples = []
    for template in ("invite", "reminder"):
        for channel in campaign.channels:
            for locale in ("en", "es"):
                subject, text, _html = render_message(template, channel, locale, context)
                problems = lint_message(text, channel, campaign.clinic.name)
                samples.append({"template": template, "channel": channel, "locale": locale, "subject": subject,
                                "text": text, "segments": sms_segments(text) if channel == "sms" else None,
                                "problems": [PROBLEM_TEXT[p.code](p.detail) for p in problems]})
    return samples


@bp.get("/campaigns/<int:campaign_id>")
@roles_required(*CAMPAIGNS)
def campaign(campaign_id: int):
    row = _campaign(campaign_id)
    variants = db.session.scalars(select(CampaignVariant).where(CampaignVariant.campaign_id == row.id)
                                  .order_by(CampaignVariant.key)).all()
    preview = campaigns.preview_audience(db.session, row) if row.status == campaigns.DRAFT else None
    return render_template("staff/campaigns/detail.html", campaign=row, variants=variants, preview=preview,
                           samples=_message_samples(row), variant_form=VariantForm(),
                           welcome_form=WelcomeForm(data={"welcome_en": row.welcome_note.get("en", ""),
                                                          "welcome_es": row.welcome_note.get("es", "")}))


@bp.post("/campaigns/<int:campaign_id>/variants")
@roles_required(*CAMPAIGNS)
def save_variant(campaign_id: int):
    row = _campaign(campaign_id)
    form = VariantForm()
    if form.validate():
        try:
            campaigns.save_variant(db.session, row, form.key.data, form.label.data or "", form.weight.data,
                                   {"en": form.sms_en.data or "", "es": form.sms_es.data or ""},
                                   {"en": form.offer_en.data or "", "es": form.offer_es.data or ""},
                                   clinic_time_to_utc(form.offer_ends.data, row))
        except MessageRejected as rejected:
            for locale, problem in rejected.problems:
                form.form_errors.append(f"{locale}: {PROBLEM_TEXT[problem.code](problem.detail)}")
        else:
            commit()
            flash(_("Variant saved."))
            return redirect(url_for("staff.campaign", campaign_id=row.id), code=303)
    variants = db.session.scalars(select(CampaignVariant).where(CampaignVariant.campaign_id == row.id)).all()
    return render_template("staff/campaigns/detail.html", campaign=row, variants=variants, preview=None,
                           samples=_message_samples(row), variant_form=form, welcome_form=WelcomeForm()), 400


def clinic_time_to_utc(value, campaign: Campaign):
    """A wall-clock time typed by staff, in the clinic's (first location's) zone, as UTC."""
    if value is None:
        return None
    locations = availability.open_locations(db.session, campaign.clinic_id)
    zone = ZoneInfo(locations[0].time_zone if locations else "UTC")
    return value.replace(tzinfo=zone).astimezone(timezone.utc)


@bp.post("/campaigns/<int:campaign_id>/welcome")
@roles_required(*CAMPAIGNS)
def save_welcome(campaign_id: int):
    """The "what's new since your last visit" note, shown after verification."""
    row = _campaign(campaign_id)
    form = WelcomeForm()
    if not form.validate():
        flash(_("Please shorten the note and remove < and >."))
        return redirect(url_for("staff.campaign", campaign_id=row.id), code=303)
    row.welcome_note = {k: v for k, v in {"en": form.welcome_en.data, "es": form.welcome_es.data}.items() if v}
    commit()
    flash(_("Saved."))
    return redirect(url_for("staff.campaign", campaign_id=row.id), code=303)


@bp.post("/campaigns/<int:campaign_id>/status")
@roles_required(*CAMPAIGNS)
def campaign_status(campaign_id: int):
    row = _campaign(campaign_id)
    action = request.form.get("action", "")
    try:
        if action == "launch":
            enrolled = campaigns.launch(db.session, row)
            flash(_("Launched: %(count)d patients enrolled.", count=enrolled))
        elif action in ("pause", "resume", "stop"):
            campaigns.set_status(db.session, row, {"pause": campaigns.PAUSED, "resume": campaigns.ACTIVE,
                                                   "stop": campaigns.STOPPED}[action])
            flash(_("Saved."))
        else:
            abort(400)
    except InvalidInput:
        db.session.rollback()
        flash(_("That isn't possible for a campaign in this state."))
        return redirect(url_for("staff.campaign", campaign_id=campaign_id), code=303)
    commit()
    return redirect(url_for("staff.campaign", campaign_id=row.id), code=303)
