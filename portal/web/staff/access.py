"""Who is signed in to the console, and what their role lets them do.

Flask-Login keeps only the random session key in the cookie; the user is loaded
through the server-side session row, so logging out (deleting the row) ends every
copy of that cookie.
"""
from __future__ import annotations

from functools import wraps

from flask import abort, current_app, g, request, session
from flask_login import current_user, login_user, logout_user

from portal.extensions import db, login_manager
from portal.models import Role, StaffUser
from portal.services.audit import audit
from portal.services.errors import SessionEnded
from portal.services.patient_sessions import TOUCHED
from portal.services.staff_auth import STAFF, end_staff_session, load_staff_session, start_staff_session

# What each role may open. Admin may open everything.
SCHEDULING = (Role.SCHEDULER,)
SCHEDULE_VIEW = (Role.SCHEDULER, Role.COORDINATOR)
QUEUE = (Role.COORDINATOR,)
CAMPAIGNS = (Role.CAMPAIGN_MANAGER,)
ADMIN_ONLY = ()


class ConsoleUser:
    """The signed-in staff member as Flask-Login sees them: get_id() is the session key."""

    def __init__(self, user: StaffUser, key: str) -> None:
        self.user = user
        self._key = key

    is_authenticated = True
    is_active = True
    is_anonymous = False

    def get_id(self) -> str:
        return self._key

    def __getattr__(self, name):
        return getattr(self.user, name)


@login_manager.user_loader
def _load(key: str) -> ConsoleUser | None:
    try:
        staff_session = load_staff_session(db.session, key, STAFF, current_app.config["STAFF_IDLE"],
                                           current_app.config["STAFF_ABSOLUTE"])
    except SessionEnded:
        db.session.commit()
        return None
    if db.session.info.pop(TOUCHED, False):
        db.session.commit()  # keep the idle-clock touch even on pages that change nothing else
    return ConsoleUser(staff_session.user, key)


def sign_in(user: StaffUser) -> None:
    """Rotate: a brand-new session key at the moment the second factor succeeds."""
    key = start_staff_session(db.session, user, STAFF)
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang
    login_user(ConsoleUser(user, key))


def sign_out() -> None:
    if current_user.is_authenticated:
        end_staff_session(db.session, current_user.get_id())
    logout_user()
    session.clear()


def roles_required(*roles: Role):
    """Signed in with both factors and holding one of `roles` (admin always may)."""
    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if current_user.role != Role.ADMIN and current_user.role not in roles:
                abort(403)
            g.staff = current_user.user
            return view(*args, **kwargs)
        wrapper.allowed_roles = tuple(roles)
        return wrapper
    return decorator


def can(*roles: Role) -> bool:
    """For templates: show a link only to the roles that may follow it."""
    return current_user.is_authenticated and (current_user.role == Role.ADMIN or current_user.role in roles)


def record_access(action: str, record_type: str, record_id: int, /, **detail) -> None:
    """Audit a staff read or change of patient data (who, what, which, when, from where)."""
    audit(db.session, g.staff, action, record_type, record_id, remote_addr=request.remote_addr or "", **detail)
