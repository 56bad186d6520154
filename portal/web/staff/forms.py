"""Console forms. Labels are lazy-translated; every free-text field has a ceiling."""
from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Email, InputRequired, Length, Optional, Regexp

from portal.models import Role
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
