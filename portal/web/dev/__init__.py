"""Development-only pages. Registered only when PORTAL_ENV=development."""
from flask import Blueprint, render_template
from sqlalchemy import select

from portal.extensions import db
from portal.models import OutboxMessage

bp = Blueprint("dev", __name__, url_prefix="/dev")


@bp.get("/outbox")
def outbox():
    messages = db.session.scalars(select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(200)).all()
    return render_template("dev/outbox.html", messages=messages)
