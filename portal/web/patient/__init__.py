"""The link portal: everything a patient does from the link in their message."""
from flask import Blueprint

from portal.web.patient.context import template_helpers

bp = Blueprint("patient", __name__)
bp.context_processor(template_helpers)

from portal.web.patient import after_booking, booking, care, entry  # noqa: E402,F401  (routes register on bp)
