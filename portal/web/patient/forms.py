"""Patient forms. Every validator carries its own translated message, free text
refuses markup and control characters, and every length has a ceiling."""
from __future__ import annotations

import re
from datetime import date

from flask_babel import gettext, lazy_gettext as _l
from flask import request
from wtforms import IntegerField, RadioField, SelectField, SelectMultipleField, StringField, TextAreaField
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional, Regexp, ValidationError
from wtforms.widgets import CheckboxInput, ListWidget

from portal.models import HelpKind
from portal.services.responses import REMIND_WEEKS, SURVEY_REASONS
from portal.web.form_base import PortalForm

MAX_ID = 2**31 - 1  # the largest id a PostgreSQL integer column holds; bigger ones can't name a row
MARKUP_OR_CONTROL = re.compile(r"[<>\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def plain_text(form, field) -> None:
    """Free text may be in any script, emoji included, but not markup or control characters."""
    if field.data and MARKUP_OR_CONTROL.search(field.data):
        # gettext, not the lazy _l: Flask-Babel marks lazy strings as safe HTML, so "<" would reach the page raw
        raise ValidationError(gettext("Please remove the < and > characters."))


def required(message=None):
    return DataRequired(message=message or _l("Please fill this in."))


def text(label, max_length: int, *validators, area: bool = False):
    field = TextAreaField if area else StringField
    return field(label, validators=[*validators, Length(max=max_length, message=_l(
        "Please use at most %(max)d characters.", max=max_length)), plain_text],
        filters=[lambda value: value.strip() if isinstance(value, str) else value])


def month_choices():
    months = (_l("January"), _l("February"), _l("March"), _l("April"), _l("May"), _l("June"), _l("July"),
              _l("August"), _l("September"), _l("October"), _l("November"), _l("December"))
    return [("", _l("Month"))] + [(str(number), name) for number, name in enumerate(months, start=1)]


class PlainForm(PortalForm):
    """Patient forms read the posted form fields only. Flask-WTF would also feed them
    uploaded files and JSON bodies, which reach the validators as objects, not text
    (a file in a text field was a 500)."""

    class Meta(PortalForm.Meta):
        def wrap_formdata(self, form, formdata):
            if formdata is None or hasattr(formdata, "getlist"):  # given explicitly by the caller
                return super().wrap_formdata(form, formdata)
            return request.form if request.method in {"POST", "PUT", "PATCH", "DELETE"} and request.form else None


class BirthDateMixin:
    birth_month = SelectField(_l("Month"), choices=month_choices, validators=[required(_l("Choose the month."))])
    birth_day = IntegerField(_l("Day"), validators=[InputRequired(_l("Enter the day as a number.")),
                                                    NumberRange(1, 31, _l("Enter a day from 1 to 31."))])
    birth_year = IntegerField(_l("Year"), validators=[InputRequired(_l("Enter the year as 4 numbers, like 1960.")),
                                                      NumberRange(1900, 2100, _l("Enter the year as 4 numbers, like 1960."))])

    def validate_birth_year(self, field) -> None:
        if field.errors or self.birth_month.errors or self.birth_day.errors or not self.birth_month.data:
            return
        try:
            self.birth_date = date(field.data, int(self.birth_month.data), self.birth_day.data)
        except (TypeError, ValueError):
            raise ValidationError(_l("That date doesn't exist. Please check the day and month.")) from None


class SendCodeForm(PlainForm):
    channel = RadioField(_l("Where should we send your code?"), choices=[],
                         validators=[InputRequired(_l("Choose where to send your code."))])


class VerifyCodeForm(BirthDateMixin, PlainForm):
    code = StringField(_l("6-digit code"), filters=[lambda v: re.sub(r"[\s-]", "", v) if isinstance(v, str) else v],
                       validators=[InputRequired(_l("Enter the 6-digit code from your message.")),
                                   Regexp(r"^\d{6}$", message=_l("The code is 6 numbers."))])


class VerifyNameForm(BirthDateMixin, PlainForm):
    last_name = text(_l("Last name"), 100, required(_l("Enter your last name.")))


class SlotChoiceForm(PlainForm):
    """Hold or book: which slot, for which appointment type."""

    slot = IntegerField(validators=[InputRequired(_l("Please choose a time.")),
                                    NumberRange(1, MAX_ID, _l("Please choose a time."))])
    appointment_type = IntegerField(validators=[InputRequired(_l("Please choose a kind of visit.")),
                                                NumberRange(1, MAX_ID, _l("Please choose a kind of visit."))])


class CancelForm(PlainForm):
    reason = SelectField(_l("Reason (optional)"), validators=[Optional()], choices=[
        ("", _l("I'd rather not say")), ("time", _l("The time no longer works")),
        ("transport", _l("I can't get there")), ("cost", _l("Worried about the cost")),
        ("feel_better", _l("I feel better")), ("other", _l("Another reason"))])


class PrevisitForm(PlainForm):
    phone = text(_l("Phone number (if it changed)"), 30, Optional(),
                 Regexp(r"^\+?[0-9 ().-]{7,25}$", message=_l("Enter a phone number using numbers only, like 555 123 4567.")))
    # A plain shape check: wtforms' Email() needs the email_validator package (a 500 without it), and this
    # answer is only shown to the front desk, never used to send anything.
    email = text(_l("Email (if it changed)"), 200, Optional(),
                 Regexp(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", message=_l("Enter an email like name@example.com.")))
    insurance_carrier = text(_l("Insurance company"), 100)
    insurance_member_id = text(_l("Member ID"), 40, Optional(),
                               Regexp(r"^[A-Za-z0-9 -]+$", message=_l("Use only letters, numbers and dashes.")))
    reason = text(_l("What would you like to talk about at the visit?"), 1000, area=True)
    medications = text(_l("Medicines you take now"), 2000, area=True)
    accessibility = text(_l("Anything that would make the visit easier (wheelchair access, hearing, vision)"), 500,
                         area=True)
    interpreter = SelectField(_l("Do you need an interpreter?"), validators=[Optional()], choices=[
        ("", _l("No")), ("es", _l("Yes, Spanish")), ("asl", _l("Yes, sign language")), ("other", _l("Yes, another language"))])

    ANSWERS = ("phone", "email", "insurance_carrier", "insurance_member_id", "reason", "medications",
               "accessibility", "interpreter")
    REQUIRED_TO_SUBMIT = ("reason",)


class CostHelpForm(PlainForm):
    question = text(_l("What would you like help with?"), 500, required(), area=True)


class RideHelpForm(PlainForm):
    pickup_address = text(_l("Pickup address"), 200, required(_l("Enter where we should pick you up.")))
    time_window = SelectField(_l("When can you be picked up?"), validators=[required(_l("Choose a time of day."))],
                              choices=[("", _l("Choose")), ("morning", _l("Morning")), ("afternoon", _l("Afternoon")),
                                       ("evening", _l("Evening")), ("any", _l("Any time"))])
    mobility = SelectMultipleField(_l("Mobility needs"), option_widget=CheckboxInput(),
                                   widget=ListWidget(prefix_label=False), validators=[Optional()],
                                   choices=[("wheelchair", _l("Wheelchair")), ("walker", _l("Walker or cane")),
                                            ("companion", _l("Someone will come with me"))])


class InterpreterHelpForm(PlainForm):
    language = text(_l("Which language?"), 60, required(_l("Enter the language you need.")))


HELP_FORMS = {HelpKind.COST: CostHelpForm, HelpKind.RIDE: RideHelpForm, HelpKind.INTERPRETER: InterpreterHelpForm}


class DeclineForm(PlainForm):
    choice = RadioField(_l("What would you like to do?"), validators=[InputRequired(_l("Choose one option."))], choices=[
        ("done_elsewhere", _l("I already had this done somewhere else")),
        ("moved", _l("I moved or changed doctors")),
        ("remind_later", _l("Not now, remind me later")),
        ("stop", _l("Stop contacting me"))])
    weeks = SelectField(_l("Remind me in"), validators=[Optional()], coerce=int, default=REMIND_WEEKS[1],
                        choices=[(w, _l("%(weeks)d weeks", weeks=w)) for w in REMIND_WEEKS])
    note = text(_l("Anything you'd like us to know (optional)"), 300, Optional(), area=True)


class SurveyForm(PlainForm):
    reason = RadioField(_l("What made it hard to come back?"), validators=[InputRequired(_l("Choose one answer."))],
                        choices=list(zip(SURVEY_REASONS, (
                            _l("Finding a time that works"), _l("Getting there"), _l("The cost"), _l("I forgot"),
                            _l("Language"), _l("I felt fine"), _l("Booking was hard"), _l("Something else")))))



class RefillForm(PlainForm):
    pharmacy = text(_l("Pharmacy (name and street)"), 200, Optional())


class PairForm(PlainForm):
    """A lab visit and the follow-up visit after it, booked together."""

    first = IntegerField(validators=[InputRequired(_l("Please choose a time.")),
                                     NumberRange(1, MAX_ID, _l("Please choose a time."))])
    first_type = IntegerField(validators=[InputRequired(_l("Please choose a kind of visit.")),
                                          NumberRange(1, MAX_ID, _l("Please choose a kind of visit."))])
    second = IntegerField(validators=[InputRequired(_l("Please choose a time.")),
                                      NumberRange(1, MAX_ID, _l("Please choose a time."))])
    second_type = IntegerField(validators=[InputRequired(_l("Please choose a kind of visit.")),
                                           NumberRange(1, MAX_ID, _l("Please choose a kind of visit."))])
