"""Console forms. Labels are lazy-translated; every free-text field has a ceiling."""
from __future__ import annotations

from flask_babel import lazy_gettext as _l
from wtforms import (BooleanField, DateTimeLocalField, EmailField, IntegerField, PasswordField, SelectField, SelectMultipleField,
                     StringField, TextAreaField)
from wtforms.validators import DataRequired, Email, InputRequired, Length, NumberRange, Optional, Regexp
from wtforms.widgets import CheckboxInput, ListWidget

from portal.models import Channel
from portal.services.care_gaps import CARE_GAPS
from portal.web.form_base import PortalForm
from portal.web.labels import LABELS, choices
from portal.web.patient.forms import plain_text


class SignInForm(PortalForm):
    email = EmailField(_l("Email"), validators=[DataRequired(_l("Enter your email.")), Length(max=200)])
    password = PasswordField(_l("Password"), validators=[DataRequired(_l("Enter your password.")), Length(max=200)])


class CodeForm(PortalForm):
    code = StringField(_l("Code from your authenticator app, or a recovery code"),
                       validators=[DataRequired(_l("Enter the code.")), Length(max=20)])


class StaffAccountForm(PortalForm):
    email = EmailField(_l("Email"), validators=[DataRequired(_l("Enter an email.")),
                                                Email(_l("Enter an email like name@example.com.")), Length(max=200)])
    display_name = StringField(_l("Name"), validators=[DataRequired(_l("Enter a name.")), Length(max=200), plain_text])
    role = SelectField(_l("Role"), choices=choices("role"), validators=[InputRequired()])
    password = PasswordField(_l("First password (at least 12 characters)"),
                             validators=[DataRequired(_l("Enter a password.")),
                                         Length(min=12, max=200, message=_l("Use 12 to 200 characters."))])


class NoteForm(PortalForm):
    text = TextAreaField(_l("Note"), validators=[DataRequired(_l("Write a note.")), Length(max=2000), plain_text])


class OutreachForm(PortalForm):
    outcome = SelectField(_l("Outcome"), validators=[InputRequired()], choices=[
        ("reached", _l("Reached")), ("voicemail", _l("Left a voicemail")), ("wrong_number", _l("Wrong number")),
        ("booked_by_phone", _l("Booked by phone")), ("declined", _l("Declined"))])
    note = TextAreaField(_l("Note"), validators=[Optional(), Length(max=2000), plain_text])


class AuditSearchForm(PortalForm):
    class Meta:
        csrf = False  # a GET search form

    staff_email = StringField(_l("Staff email"), validators=[Optional(), Length(max=200)])
    record_type = SelectField(_l("Record type"), choices=[("", _l("Any"))] + choices("record_type"),
                              validators=[Optional()])
    record_id = StringField(_l("Record number"), validators=[Optional(), Regexp(r"^\d{1,12}$")])


def care_gap_choices():
    return [(code, f"{gap.service_line} ({code})") for code, gap in CARE_GAPS.items()]


class CampaignForm(PortalForm):
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
                                   choices=[(channel, LABELS["channel"][channel])
                                            for channel in (Channel.SMS.value, Channel.EMAIL.value)],
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


class VariantForm(PortalForm):
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


class WelcomeForm(PortalForm):
    welcome_en = TextAreaField(_l("What's new since their last visit, in English"),
                               validators=[Optional(), Length(max=600), plain_text])
    welcome_es = TextAreaField(_l("What's new since their last visit, in Spanish"),
                               validators=[Optional(), Length(max=600), plain_text])


# -- clinic setup and availability (schedulers) -------------------------------------------------

import re as _re  # noqa: E402
from functools import lru_cache as _lru_cache  # noqa: E402

from babel import Locale as _Locale  # noqa: E402
from flask_babel import LazyString as _LazyString, get_locale as _get_locale, gettext as _  # noqa: E402
from wtforms import DateField, HiddenField, IntegerField, SelectMultipleField, TimeField  # noqa: E402
from wtforms.validators import NumberRange, StopValidation, ValidationError  # noqa: E402
from wtforms.widgets import CheckboxInput, ListWidget  # noqa: E402

from portal.models import Modality  # noqa: E402
from portal.services.clinic_setup import (BUFFER_RANGE, DURATION_RANGE, MAX_DAYS_AHEAD_RANGE,  # noqa: E402
                                          MIN_NOTICE_RANGE, NOTE_MAX, PREVISIT_FORMS, check_time_zone)
from portal.services.errors import InvalidInput as _InvalidInput  # noqa: E402
from portal.services.schedule import MAX_CAPACITY, MIN_SLOT_MINUTES  # noqa: E402
from portal.web.patient.forms import text as _text_field  # noqa: E402

CHOOSE = _l("Choose one of the options.")
WHOLE_NUMBER = _re.compile(r"^-?\d{1,9}$")


def _required(message=None):
    return DataRequired(message or _l("Please fill this in."))


class WholeNumber(IntegerField):
    """An integer input whose wrong-type answer gets our own translated message."""

    def process_formdata(self, valuelist):
        if not valuelist:
            return
        value = valuelist[0].strip() if isinstance(valuelist[0], str) else ""
        if not value:
            self.data = None
            return
        if not WHOLE_NUMBER.fullmatch(value):
            self.data = None
            raise ValueError(_l("Enter a whole number, like 30."))
        self.data = int(value)


def _number(label, bounds: tuple[int, int], default=None):
    low, high = bounds
    return WholeNumber(label, default=default, validators=[
        InputRequired(_l("Enter a whole number, like 30.")),
        NumberRange(low, high, _l("Enter a number from %(low)d to %(high)d.", low=low, high=high))])


def _day(label, *validators):
    return DateField(label, validators=list(validators) or [InputRequired(_l("Enter a date."))],
                     invalid_value_message=_l("Enter a date like 2026-03-09."))


def _clock(label):
    return TimeField(label, validators=[InputRequired(_l("Enter a time."))],
                     invalid_value_message=_l("Enter a time like 09:00 (24-hour clock)."))


def optional_id(value):
    """Coerce a select's value to an id; empty means none (the whole location)."""
    if value is None or value == "":
        return None
    return int(value)


class Choice(SelectField):
    """A select that answers a tampered or mistyped value with our own message."""

    def process_formdata(self, valuelist):
        if valuelist:
            try:
                self.data = self.coerce(valuelist[0])
            except (ValueError, TypeError):
                self.data = None
                raise ValueError(CHOOSE) from None

    def pre_validate(self, form):
        if self.data not in {self.coerce(c.value) for c in (self._choices_from_input(self.choices) or [])}:
            raise ValidationError(CHOOSE)


def ticked(message):
    """At least one box ticked. Unlike InputRequired it sets no `required` flag, which
    would mark every single checkbox as required to assistive technology."""
    def check(form, field) -> None:
        if not field.data and not field.errors:
            raise StopValidation(message)
    return check


class MultiCheckbox(SelectMultipleField):
    """Checkboxes; every ticked value must be one of the offered ones."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()

    def process_formdata(self, valuelist):
        try:
            self.data = [self.coerce(value) for value in valuelist]
        except (ValueError, TypeError):
            self.data = []
            raise ValueError(CHOOSE) from None

    def pre_validate(self, form):
        offered = {self.coerce(c.value) for c in (self._choices_from_input(self.choices) or [])}
        if any(value not in offered for value in self.data or ()):
            raise ValidationError(CHOOSE)


def language_label(translate, language: str):
    """A lazy label such as "Name (Spanish)" in the viewer's language; `translate`
    takes the language's display name and calls _() on a literal (for extraction)."""
    def build():
        return translate(_Locale.parse(language).get_display_name(str(_get_locale())) or language)
    return _LazyString(build)


def modality_choices():
    return [(Modality.IN_PERSON.value, _l("In person")), (Modality.TELEHEALTH.value, _l("Video (telehealth)"))]


def weekday_choices():
    return [("0", _l("Monday")), ("1", _l("Tuesday")), ("2", _l("Wednesday")), ("3", _l("Thursday")),
            ("4", _l("Friday")), ("5", _l("Saturday")), ("6", _l("Sunday"))]


def previsit_form_choices():
    names = {"previsit": _l("Standard pre-visit questions")}
    return [(code, names.get(code, code)) for code in PREVISIT_FORMS]


def type_care_gap_choices():
    return [(code, gap.name) for code, gap in CARE_GAPS.items()]


class _ClinicField:
    # Offered only when the database holds more than one clinic; the route removes it otherwise.
    clinic = Choice(_l("Clinic"), coerce=int, choices=[])


def _valid_zone(form, field) -> None:
    if field.data:
        try:
            check_time_zone(field.data)
        except _InvalidInput:
            raise ValidationError(_l("Enter a time zone from the IANA list, like America/Chicago.")) from None


PHONE = _re.compile(r"^[0-9+() .\-]*$")


class LocationFormBase(_ClinicField, PortalForm):
    name = _text_field(_l("Name"), 200, _required(_l("Enter the location's name.")))
    address = _text_field(_l("Street address"), 200, _required(_l("Enter the address.")))
    time_zone = _text_field(_l("Time zone"), 64, _required(_l("Enter the time zone, like America/Chicago.")), _valid_zone)
    phone = _text_field(_l("Phone (optional)"), 32, Optional(),
                        Regexp(PHONE, message=_l("Use only digits, spaces and + ( ) - .")))


@_lru_cache(maxsize=8)
def location_form_class(languages: tuple[str, ...]):
    """The location form with a transit and a parking note per language the clinic serves."""
    fields = {}
    for lang in languages:
        transit = language_label(lambda name: _("Getting there by bus or train (%(language)s)", language=name), lang)
        parking = language_label(lambda name: _("Parking (%(language)s)", language=name), lang)
        fields[f"transit_notes_{lang}"] = _text_field(transit, NOTE_MAX, Optional(), area=True)
        fields[f"parking_notes_{lang}"] = _text_field(parking, NOTE_MAX, Optional(), area=True)
    return type("LocationForm", (LocationFormBase,), fields)


class ProviderForm(_ClinicField, PortalForm):
    display_name = _text_field(_l("Name as patients see it"), 200, _required(_l("Enter the provider's name.")))


class AppointmentTypeFormBase(_ClinicField, PortalForm):
    code = StringField(_l("Code (lower-case letters, digits, - and _; cannot change later)"),
                       filters=[lambda value: value.strip() if isinstance(value, str) else value],
                       validators=[_required(_l("Enter a code, like wellness-30.")), Length(max=64, message=_l(
                           "Please use at most %(max)d characters.", max=64)),
                           Regexp(r"^[a-z0-9][a-z0-9_-]*$", message=_l(
                               "Use lower-case letters, digits, - and _ only, like wellness-30."))])
    modality = Choice(_l("How the visit happens"), choices=modality_choices, validators=[InputRequired(CHOOSE)])
    join_url_pattern = _text_field(_l("Video join link (telehealth only)"), 200, Optional())
    duration_minutes = _number(_l("Length in minutes"), DURATION_RANGE, default=30)
    care_gaps = MultiCheckbox(_l("Care gaps this visit closes"), choices=type_care_gap_choices,
                              validators=[ticked(_l("Tick at least one care gap."))])
    form_code = Choice(_l("Pre-visit form"), choices=previsit_form_choices, default="previsit",
                       validators=[InputRequired(CHOOSE)])
    buffer_before_minutes = _number(_l("Buffer before, in minutes"), BUFFER_RANGE, default=0)
    buffer_after_minutes = _number(_l("Buffer after, in minutes"), BUFFER_RANGE, default=0)
    min_notice_hours = _number(_l("Soonest a patient may book, in hours from now"), MIN_NOTICE_RANGE, default=2)
    max_days_ahead = _number(_l("Furthest ahead a patient may book, in days"), MAX_DAYS_AHEAD_RANGE, default=90)

    def validate_join_url_pattern(self, field) -> None:
        if self.modality.data == Modality.TELEHEALTH and not field.data:
            raise ValidationError(_l("A video visit needs a join link, like https://video.example.org/{code}."))


@_lru_cache(maxsize=8)
def appointment_type_form_class(languages: tuple[str, ...]):
    """The appointment type form with a name and what-to-bring note per language."""
    fields = {}
    for lang in languages:
        name_checks = [_required(_l("Enter the name in English."))] if lang == "en" else [Optional()]
        name = language_label(lambda name: _("Name patients see (%(language)s)", language=name), lang)
        bring = language_label(lambda name: _("What to bring (%(language)s)", language=name), lang)
        fields[f"name_{lang}"] = _text_field(name, 200, *name_checks)
        fields[f"what_to_bring_{lang}"] = _text_field(bring, NOTE_MAX, Optional(), area=True)
    return type("AppointmentTypeForm", (AppointmentTypeFormBase,), fields)


class ConfirmForm(PortalForm):
    """A button that changes something: only the CSRF token to check."""


class TemplateForm(PortalForm):
    provider = Choice(_l("Provider"), coerce=optional_id, choices=[], validators=[InputRequired(CHOOSE)])
    location = Choice(_l("Location"), coerce=optional_id, choices=[], validators=[InputRequired(CHOOSE)])
    modality = Choice(_l("Kind of visit"), choices=modality_choices, default=Modality.IN_PERSON.value,
                      validators=[InputRequired(CHOOSE)])
    weekdays = MultiCheckbox(_l("Days of the week"), choices=weekday_choices,
                             validators=[ticked(_l("Tick at least one day."))])
    start_time = _clock(_l("First slot starts at"))
    end_time = _clock(_l("Last slot ends by"))
    slot_minutes = _number(_l("Slot length in minutes"), (MIN_SLOT_MINUTES, 480), default=30)
    capacity = _number(_l("Patients per slot (more than 1 for group visits)"), (1, MAX_CAPACITY), default=1)
    valid_from = _day(_l("From (date)"))
    valid_until = _day(_l("Until (date)"))
    confirm = HiddenField()

    def validate_end_time(self, field) -> None:
        if self.start_time.data and field.data and field.data <= self.start_time.data:
            raise ValidationError(_l("The end must be after the start, on the same day."))

    def validate_slot_minutes(self, field) -> None:
        start, end = self.start_time.data, self.end_time.data
        if start and end and end > start and field.data and \
                field.data > (end.hour * 60 + end.minute) - (start.hour * 60 + start.minute):
            raise ValidationError(_l("A slot must fit between the start and the end."))

    def validate_valid_until(self, field) -> None:
        if self.valid_from.data and field.data:
            if field.data < self.valid_from.data:
                raise ValidationError(_l("The end date must not be before the start date."))
            if (field.data - self.valid_from.data).days > 731:
                raise ValidationError(_l("A template covers at most two years. Add another one for later."))

    def template_values(self) -> dict:
        return dict(provider_id=self.provider.data, location_id=self.location.data, modality=self.modality.data,
                    weekdays="".join(sorted(self.weekdays.data)), start_time=self.start_time.data,
                    end_time=self.end_time.data, slot_minutes=self.slot_minutes.data, capacity=self.capacity.data,
                    valid_from=self.valid_from.data, valid_until=self.valid_until.data)


def nth_choices():
    return [("1", _l("First")), ("2", _l("Second")), ("3", _l("Third")), ("4", _l("Fourth")), ("-1", _l("Last"))]


class MonthlyTemplateForm(PortalForm):
    provider = Choice(_l("Provider"), coerce=optional_id, choices=[], validators=[InputRequired(CHOOSE)])
    location = Choice(_l("Location"), coerce=optional_id, choices=[], validators=[InputRequired(CHOOSE)])
    modality = Choice(_l("Kind of visit"), choices=modality_choices, default=Modality.IN_PERSON.value,
                      validators=[InputRequired(CHOOSE)])
    nth = Choice(_l("Which one in the month"), choices=nth_choices, default="1", validators=[InputRequired(CHOOSE)])
    weekday = Choice(_l("Day of the week"), choices=weekday_choices, default="5", validators=[InputRequired(CHOOSE)])
    start_time = _clock(_l("First slot starts at"))
    end_time = _clock(_l("Last slot ends by"))
    slot_minutes = _number(_l("Slot length in minutes"), (MIN_SLOT_MINUTES, 480), default=30)
    capacity = _number(_l("Patients per slot (more than 1 for group visits)"), (1, MAX_CAPACITY), default=1)
    first_month = _day(_l("Starting with the month of (any date in it)"))
    months = _number(_l("For how many months"), (1, 36), default=3)

    validate_end_time = TemplateForm.validate_end_time
    validate_slot_minutes = TemplateForm.validate_slot_minutes


class GenerateForm(PortalForm):
    horizon_days = _number(_l("Make slots for the next (days)"), (1, 366), default=90)


class BlockTimeForm(PortalForm):
    location = Choice(_l("Location"), coerce=optional_id, choices=[], validators=[InputRequired(CHOOSE)])
    provider = Choice(_l("Who"), coerce=optional_id, choices=[])
    day = _day(_l("Day"))
    start_time = _clock(_l("From"))
    end_time = _clock(_l("Until"))
    reason = _text_field(_l("Reason (staff only, optional)"), 200, Optional())

    validate_end_time = TemplateForm.validate_end_time


class BlockDaysForm(PortalForm):
    location = Choice(_l("Location"), coerce=optional_id, choices=[], validators=[InputRequired(CHOOSE)])
    provider = Choice(_l("Who"), coerce=optional_id, choices=[])
    first_day = _day(_l("First day"))
    last_day = _day(_l("Last day (leave empty for one day)"), Optional())
    reason = _text_field(_l("Reason (staff only, optional)"), 200, Optional())

    def validate_last_day(self, field) -> None:
        if self.first_day.data and field.data:
            if field.data < self.first_day.data:
                raise ValidationError(_l("The last day must not be before the first day."))
            if (field.data - self.first_day.data).days > 366:
                raise ValidationError(_l("Block at most a year at a time."))


class CopyWeekForm(PortalForm):
    provider = Choice(_l("Provider"), coerce=optional_id, choices=[], validators=[InputRequired(CHOOSE)])
    location = Choice(_l("Location"), coerce=optional_id, choices=[], validators=[InputRequired(CHOOSE)])
    source_day = _day(_l("Copy the week of (any date in it)"))
    target_day = _day(_l("Onto the week of (any date in it)"))

    def validate_target_day(self, field) -> None:
        if self.source_day.data and field.data and \
                field.data.isocalendar()[:2] == self.source_day.data.isocalendar()[:2]:
            raise ValidationError(_l("Choose a different week to copy onto."))
