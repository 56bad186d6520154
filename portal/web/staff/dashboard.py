"""Campaign outcomes for campaign managers: the funnel, booking over time, breakdowns and
the experiment, as server-rendered HTML with SVG charts that read without JavaScript
(each chart has a text description and the table it is drawn from); CSV exports of
every table with small cells suppressed; and, for coordinators only, the patients behind
a number, each view written to the audit log."""
from __future__ import annotations

from dataclasses import dataclass

from flask import Response, abort, g, render_template, request
from flask_babel import format_decimal, format_percent, gettext as _

from portal.extensions import db
from portal.models import Campaign, Role
from portal.services import analytics
from portal.services.analytics import DIMENSIONS, CampaignReport, Table, label_for
from portal.services.experiments import compare_arms, experiment_table
from portal.web.common import commit
from portal.web.staff import bp
from portal.web.staff.access import CAMPAIGNS, QUEUE, record_access, roles_required

DEFAULT_BREAKDOWN = "language"
CHOOSABLE = tuple(dim for dim in DIMENSIONS if dim != "variant")  # the arms are always shown
DRILL_STAGES = ("booked", "kept", "no_show", "cancelled", "unrecorded", "upcoming", "won_back", "opted_out",
                "verified", "opened")


def _campaign(campaign_id: int) -> Campaign:
    return db.session.get(Campaign, campaign_id) or abort(404)


def show(value, kind: str) -> str:
    """A cell as the dashboard shows it, in the viewer's number conventions."""
    if value is None:
        return "–"
    if kind == "rate":
        return format_percent(value, format="#,##0.0%")
    if kind in ("days", "points"):
        return format_decimal(value, format="#,##0.0")
    if kind in ("count", "number"):
        return format_decimal(value, format="#,##0")
    if kind == "value":
        return show(value, "rate")
    return str(value)


# --- charts: geometry here, drawing in the template ------------------------------------------------------

@dataclass
class Bar:
    label: str
    value: int
    share: float | None
    y: int
    width: float


def funnel_chart(report: CampaignReport) -> dict:
    audience = report.overall.counts["audience"] or 1
    left, span, row = 230, 300, 30
    bars = []
    for i, key in enumerate(analytics.FUNNEL):
        value = report.overall.counts[key]
        bars.append(Bar(str(analytics.STAGE[key].label), value, value / audience if audience else None,
                        10 + i * row, round(span * value / audience, 1)))
    description = "; ".join(f"{bar.label}: {show(bar.value, 'count')} ({show(bar.share, 'rate')})" for bar in bars)
    return {"bars": bars, "left": left, "span": span, "height": 20 + row * len(bars), "description": description}


LINE_STYLES = ("0", "8 4", "2 3", "12 3 2 3")  # solid, dashed, dotted, dash-dot: arms differ without colour too
LINE_COLOURS = ("#1f5f8b", "#b35900", "#2e7d32", "#6a1b9a")


def weeks_chart(report: CampaignReport) -> dict | None:
    series = {arm: points for arm, points in report.weeks.items() if points}
    if not series:
        return None
    last_week = max(point.week for points in series.values() for point in points) + 1
    top = max((point.rate or 0) for points in series.values() for point in points)
    top = max(0.05, -(-top * 20 // 1) / 20)  # round up to the next 5 points
    left, width, height, bottom = 50, 520, 200, 230
    lines = []
    for i, (arm, points) in enumerate(series.items()):
        coords = [(left, bottom)]  # week 0: nobody booked yet
        for point in points:
            coords.append((left + width * (point.week + 1) / last_week, coords[-1][1]))  # steps: flat, then up
            coords.append((left + width * (point.week + 1) / last_week, bottom - height * (point.rate or 0) / top))
        coords.append((left + width, coords[-1][1]))
        lines.append({"label": label_for("variant", arm), "points": " ".join(f"{x:.1f},{y:.1f}" for x, y in coords),
                      "dash": LINE_STYLES[i % len(LINE_STYLES)], "colour": LINE_COLOURS[i % len(LINE_COLOURS)],
                      "final": points[-1].rate, "legend_y": 20 + 18 * i})
    ticks = [{"y": bottom - height * k / 4, "label": show(top * k / 4, "rate")} for k in range(5)]
    week_ticks = [{"x": left + width * w / last_week, "label": str(w)}
                  for w in range(0, last_week + 1, max(1, last_week // 8))]
    description = "; ".join(_("%(group)s: %(rate)s booked by week %(week)s",
                              group=line["label"], rate=show(line["final"], "rate"), week=last_week)
                            for line in lines)
    return {"lines": lines, "ticks": ticks, "week_ticks": week_ticks, "left": left, "width": width,
            "bottom": bottom, "height": height, "description": description}


def experiment_chart(report: CampaignReport) -> dict | None:
    rows = [c for c in compare_arms(report.arms) if c.difference is not None]
    if not rows:
        return None
    reach = max(max(abs(c.low), abs(c.high)) for c in rows)
    reach = max(0.05, -(-reach * 20 // 1) / 20)
    left, span, row = 200, 360, 26
    centre = left + span / 2
    short = {"booking": _("booked"), "kept": _("came to a visit"), "closure": _("gap closed")}
    marks = []
    for i, c in enumerate(rows):
        scale = lambda v: centre + span / 2 * v / reach  # noqa: E731
        marks.append({"label": f"{c.variant} · {short[c.metric]}",
                      "y": 20 + i * row, "x": scale(c.difference), "low": scale(c.low), "high": scale(c.high),
                      "direction": c.direction})
    ticks = [{"x": centre + span / 2 * k / 2, "label": show(reach * k / 2 * 100, "points")} for k in (-2, -1, 0, 1, 2)]
    return {"marks": marks, "ticks": ticks, "centre": centre, "height": 40 + row * len(rows), "left": left,
            "span": span}


# --- pages ------------------------------------------------------------------------------------------------

def _breakdown_choice() -> str:
    chosen = request.args.get("by", DEFAULT_BREAKDOWN)
    return chosen if chosen in CHOOSABLE else DEFAULT_BREAKDOWN


def _tables(report: CampaignReport) -> dict[str, Table]:
    return analytics.report_tables(report, label_for, experiment_table(report, label_for))


@bp.get("/dashboard")
@roles_required(*CAMPAIGNS)
def dashboard():
    table = analytics.overview_table(analytics.campaign_overview(db.session))
    return render_template("staff/dashboard/index.html", table=table, show=show)


@bp.get("/dashboard.csv")
@roles_required(*CAMPAIGNS)
def dashboard_csv():
    table = analytics.overview_table(analytics.campaign_overview(db.session))
    return _csv(table, "campaigns.csv")


@bp.get("/dashboard/<int:campaign_id>")
@roles_required(*CAMPAIGNS)
def campaign_dashboard(campaign_id: int):
    campaign = _campaign(campaign_id)
    by = _breakdown_choice()
    report = analytics.campaign_report(db.session, campaign, dimensions=(by,))
    commit()  # keep the facts just refreshed, so the next view only recomputes what changes after this one
    tables = _tables(report)
    return render_template(
        "staff/dashboard/campaign.html", campaign=campaign, report=report, tables=tables, by=by,
        choices=[(dim, DIMENSIONS[dim]) for dim in CHOOSABLE], show=show,
        funnel=funnel_chart(report), weeks=weeks_chart(report), experiment=experiment_chart(report),
        drill=g.staff.role in (Role.ADMIN, Role.COORDINATOR), drill_stages=DRILL_STAGES,
        window_end=analytics.window_end(campaign, report.now))


@bp.get("/dashboard/<int:campaign_id>/<table_key>.csv")
@roles_required(*CAMPAIGNS)
def campaign_dashboard_csv(campaign_id: int, table_key: str):
    campaign = _campaign(campaign_id)
    dims = ()
    if table_key.startswith("by_") and table_key[3:] in DIMENSIONS:
        dims = (table_key[3:],)
    report = analytics.campaign_report(db.session, campaign, dimensions=dims)
    commit()
    tables = _tables(report)
    if table_key not in tables:
        abort(404)
    return _csv(tables[table_key], f"campaign-{campaign.id}-{table_key}.csv")


def _csv(table: Table, filename: str) -> Response:
    return Response(analytics.to_csv(table), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@bp.get("/dashboard/<int:campaign_id>/patients")
@roles_required(*QUEUE)
def dashboard_patients(campaign_id: int):
    """The patients behind one number, for coordinators to follow up; each one shown is audited."""
    campaign = _campaign(campaign_id)
    stage = request.args.get("stage", "")
    dim = request.args.get("by") or None
    key = request.args.get("key", "")[:64]
    if stage not in DRILL_STAGES or (dim is not None and dim not in DIMENSIONS):
        abort(404)
    patients = analytics.patients_in_cell(db.session, campaign, stage, dim, key)
    for patient in patients:
        record_access("view", "patient", patient.patient_id, via="campaign_dashboard", campaign_id=campaign.id,
                      stage=stage)
    commit()
    return render_template("staff/dashboard/patients.html", campaign=campaign, patients=patients,
                           stage_label=analytics.STAGE[stage].label,
                           group_label=label_for(dim, key) if dim else None,
                           dimension_label=DIMENSIONS[dim] if dim else None, limit=analytics.MAX_DRILL_DOWN,
                           label_for=label_for)
