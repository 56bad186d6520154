"""The staff console: schedulers, coordinators, campaign managers and admins."""
from flask import Blueprint

from portal.web.staff.access import can

bp = Blueprint("staff", __name__, url_prefix="/staff")
bp.context_processor(lambda: {"can": can})

from portal.web.staff import auth, availability, campaigns, dashboard, home, queue, records, schedule, setup  # noqa: E402,F401  (routes register on bp)
