"""The link portal: everything a patient does from the link in their message."""
from flask import Blueprint, g, request

from portal.database import READ_ONLY
from portal.web.patient.context import template_helpers

bp = Blueprint("patient", __name__)
bp.context_processor(template_helpers)
# Opening a link starts a session and records the visit: the one patient GET that writes.
WRITING_GETS = {"patient.open_link"}


@bp.before_request
def _reading_pages_only_read():
    """A patient's GET page reads; on SQLite it then runs without the write lock."""
    setattr(g, READ_ONLY, request.method in ("GET", "HEAD") and request.endpoint not in WRITING_GETS)


from portal.web.patient import after_booking, booking, care, entry  # noqa: E402,F401  (routes register on bp)
