"""The console's front page, staff accounts, and the audit log."""
from __future__ import annotations

from flask import Response, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask import flash
from flask_login import current_user

from portal.extensions import db, login_manager
from portal.models import StaffUser
from portal.services import staff_auth
from portal.services.audit import audit_csv, search_audit
from portal.services.errors import InvalidInput
from portal.web.common import commit
from portal.web.staff import bp
from portal.web.staff.access import ADMIN_ONLY, roles_required
from portal.web.staff.forms import AuditSearchForm, StaffAccountForm
from sqlalchemy import select


@login_manager.unauthorized_handler
def _to_login():
    return redirect(url_for("staff.login", next=request.full_path.rstrip("?")), code=303)


@bp.get("/")
@roles_required("scheduler", "coordinator", "campaign_manager")
def home():
    return render_template("staff/home.html")


@bp.route("/users", methods=["GET", "POST"])
@roles_required(*ADMIN_ONLY)
def users():
    form = StaffAccountForm()
    status = 200
    if request.method == "POST":
        if form.validate():
            try:
                staff_auth.create_staff(db.session, form.email.data, form.role.data, form.display_name.data,
                                        form.password.data)
            except InvalidInput:
                form.email.errors.append(_("An account with this email already exists."))
                status = 400
            else:
                commit()
                flash(_("Account created. They will set up their authenticator at first sign-in."))
                return redirect(url_for("staff.users"), code=303)
        else:
            status = 400
    accounts = db.session.scalars(select(StaffUser).order_by(StaffUser.email)).all()
    return render_template("staff/users.html", form=form, accounts=accounts), status


@bp.get("/audit")
@roles_required(*ADMIN_ONLY)
def audit_log():
    form = AuditSearchForm(request.args)
    rows = []
    if form.validate():
        rows = search_audit(db.session, staff_email=form.staff_email.data or "", record_type=form.record_type.data or "",
                            record_id=int(form.record_id.data) if form.record_id.data else None)
    if request.args.get("format") == "csv":
        return Response(audit_csv(rows), mimetype="text/csv",
                        headers={"Content-Disposition": 'attachment; filename="audit.csv"'})
    return render_template("staff/audit.html", form=form, rows=rows, current_user=current_user)
