"""Console forms. Labels are lazy-translated; every free-text field has a ceiling."""
from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (BooleanField, DateTimeLocalField, EmailField, IntegerField, PasswordField, SelectField, SelectMultipleField,
                     StringField, TextAreaField)
from wtforms.validators import DataRequired, Email, InputRequired, Length, NumberRange, Optional, Regexp
from wtforms.widgets import CheckboxInput, ListWidget

from portal.models import Role
from portal.services.care_gaps import CARE_GAPS
from portal.web.patient.forms import plain_text


def role_choices():
    return [(Role.ADMIN.value, _l("Admin")), (Role.SCHEDULER.value, _l("Scheduler")),
            (Role.COORDINATOR.value, _l("Care coordinator")), (Role.CAMPAIGN_MANAGER.value, _l("Campaign manager"))]


class SignInForm(FlaskForm):
    email = EmailField(_l("Email"), validators=[DataRequired(_l("Enter your email.")), Length(max=200)])
    password = PasswordField(_l("Password"), validators=[DataRequired(_l("Enter your password.")), Length(max=200)])


class CodeForm(FlaskForm):
    code = StringField(_l("Code from your authenticator app, or a recovery code"),
                       validators=[DataRequired(_l("Enter the code.")), Length(max=20)])


class StaffAccountForm(FlaskForm):
    email = EmailField(_l("Email"), validators=[DataRequired(_l("Enter an email.")),
                                                Email(_l("Enter an email like name@example.com.")), Length(max=200)])
    display_name = StringField(_l("Name"), validators=[DataRequired(_l("Enter a name.")), Length(max=200), plain_text])
    role = SelectField(_l("Role"), choices=role_choices, validators=[InputRequired()])
    password = PasswordField(_l("First password (at least 12 characters)"),
                             validators=[DataRequired(_l("Enter a password.")),
                                         Length(min=12, max=200, message=_l("Use 12 to 200 characters."))])


class NoteForm(FlaskForm):
    text = TextAreaField(_l("Note"), validators=[DataRequired(_l("Write a note.")), Length(max=2000), plain_text])


class OutreachForm(FlaskForm):
    outcome = SelectField(_l("Outcome"), validators=[InputRequired()], choices=[
        ("reached", _l("Reached")), ("voicemail", _l("Left a voicemail")), ("wrong_number", _l("Wrong number")),
        ("booked_by_phone", _l("Booked by phone")), ("declined", _l("Declined"))])
    note = TextAreaField(_l("Note"), validators=[Optional(), Length(max=2000), plain_text])


class AuditSearchForm(FlaskForm):
    class Meta:
        csrf = False  # a GET search form

    staff_email = StringField(_l("Staff email"), validators=[Optional(), Length(max=200)])
    record_type = StringField(_l("Record type"), validators=[Optional(), Length(max=32)])
    record_id = StringField(_l("Record number"), validators=[Optional(), Regexp(r"^\d{1,12}$")])


def care_gap_choices():
    return [(code, f"{gap.service_line} ({code})") for code, gap in CARE_GAPS.items()]


class CampaignForm(FlaskForm):
    name = StringField(_l("Campaign name"), validators=[DataRequired(_l("Give the campaign a name.")),
                                                        Length(max=200), plain_text])
    care_gap_codes = SelectMultipleField(_l("Care gaps"), choices=care_gap_choices, option_widget=CheckboxInput(),
                                         widget=ListWidget(prefix_label=False),
                                         validators=[DataRequired(_l("Choose at least one care gap."))])
    verification_policy = SelectField(_l("How patients confirm who they are"), choices=[
        ("dob_code", _l("Birth date and a one-time code (shows visit details)")),
        ("dob_last_name", _l("Birth date and last name (low risk: no clinical detail)"))])
    channels = SelectMultipleField(_l("Channels, in this order"), option_widget=CheckboxInput(),
                                   widget=ListWidget(prefix_label=False),
                                   choices=[("sms", _l("Text message")), ("email", _l("Email"))],
                                   validators=[DataRequired(_l("Choose at least one channel."))])
    step_days = StringField(_l("Send on these days (first is 0)"), default="0, 7, 14, 30",
                            validators=[DataRequired(), Regexp(r"^\s*0(\s*,\s*\d{1,3}){0,9}\s*$",
                                                               message=_l("Use days like 0, 7, 14, 30."))])
    holdout_percent = IntegerField(_l("Control group (%)"), default=10,
                                   validators=[InputRequired(), NumberRange(0, 50, _l("Use 0 to 50."))])
    link_lifetime_days = IntegerField(_l("Link works for (days)"), default=14,
                                      validators=[InputRequired(), NumberRange(1, 60, _l("Use 1 to 60."))])
    max_invites = IntegerField(_l("Most patients to invite (empty: no limit)"),
                               validators=[Optional(), NumberRange(1, 10_000_000)])
    escalate_tier1 = BooleanField(_l("Put tier 1 patients on the call list at launch"), default=True)


class VariantForm(FlaskForm):
    key = StringField(_l("Variant letter"), validators=[DataRequired(), Regexp(r"^[A-Z]$", message=_l("One capital letter."))])
    label = StringField(_l("Description"), validators=[Optional(), Length(max=200), plain_text])
    weight = IntegerField(_l("Share"), default=1, validators=[InputRequired(), NumberRange(1, 100)])
    sms_en = TextAreaField(_l("Text message in English (empty: the standard wording)"),
                           validators=[Optional(), Length(max=600), plain_text])
    sms_es = TextAreaField(_l("Text message in Spanish (empty: the standard wording)"),
                           validators=[Optional(), Length(max=600), plain_text])
    offer_en = StringField(_l("Time-limited offer in English (optional)"),
                           validators=[Optional(), Length(max=200), plain_text])
    offer_es = StringField(_l("Time-limited offer in Spanish (optional)"),
                           validators=[Optional(), Length(max=200), plain_text])
    offer_ends = DateTimeLocalField(_l("Offer ends (clinic time)"), validators=[Optional()])


class WelcomeForm(FlaskForm):
    welcome_en = TextAreaField(_l("What's new since their last visit, in English"),
                               validators=[Optional(), Length(max=600), plain_text])
    welcome_es = TextAreaField(_l("What's new since their last visit, in Spanish"),
                               validators=[Optional(), Length(max=600), plain_text])
