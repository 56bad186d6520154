"""`portal report CAMPAIGN_ID --format csv|json`: a campaign's outcome tables for analysts.

The same tables as the console dashboard, every breakdown included, with the same
small-cell suppression as the dashboard's downloads (counts of 1 to 10 patients, and
anything computed from them, are written "<11"). Writes only the refreshed facts behind
the tables (portal/services/analytics.py), committed so the next report starts from them.
"""
from __future__ import annotations

import json
from pathlib import Path

import click
from flask.cli import with_appcontext
from flask_babel import force_locale

from portal.extensions import db
from portal.models import Campaign
from portal.services import analytics
from portal.services.analytics import label_for
from portal.services.experiments import experiment_table


@click.command("report")
@click.argument("campaign_id", type=int)
@click.option("--format", "output_format", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--table", "only", multiple=True, help="Only this table (repeatable), e.g. by_variant.")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write one CSV file per table here instead of printing them.")
@click.option("--locale", default="en", show_default=True, help="Language of labels and verdicts.")
@with_appcontext
def report_command(campaign_id: int, output_format: str, only: tuple[str, ...], out_dir: Path | None,
                   locale: str) -> None:
    """Print a campaign's outcome tables (every breakdown), small cells suppressed."""
    campaign = db.session.get(Campaign, campaign_id)
    if campaign is None:
        raise click.ClickException(f"no campaign {campaign_id}")
    with force_locale(locale):
        result = analytics.campaign_report(db.session, campaign)
        tables = analytics.report_tables(result, label_for, experiment_table(result, label_for))
        unknown = set(only) - set(tables)
        if unknown:
            raise click.ClickException(f"no such table: {', '.join(sorted(unknown))} "
                                       f"(tables: {', '.join(tables)})")
        chosen = [table for key, table in tables.items() if not only or key in only]
        if output_format == "json":
            click.echo(json.dumps({
                "campaign": {"id": campaign.id, "name": campaign.name, "status": campaign.status,
                             "launched_at": campaign.launched_at.isoformat() if campaign.launched_at else None,
                             "window_days": campaign.window_days, "as_of": result.now.isoformat(),
                             "suppressed_below": analytics.SMALL_CELL},
                "tables": {table.key: {"title": str(table.title), "rows": _records(table)} for table in chosen},
            }, ensure_ascii=False, indent=2))
        elif out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            for table in chosen:
                (out_dir / f"campaign-{campaign.id}-{table.key}.csv").write_text(analytics.to_csv(table))
            click.echo(f"wrote {len(chosen)} tables to {out_dir}")
        else:
            for i, table in enumerate(chosen):
                if i:
                    click.echo("")
                click.echo(f"# {table.key}")
                click.echo(analytics.to_csv(table), nl=False)
    db.session.commit()


def _records(table: analytics.Table) -> list[dict[str, str]]:
    header, *rows = analytics.export_rows(table)
    return [dict(zip(header, row)) for row in rows]
