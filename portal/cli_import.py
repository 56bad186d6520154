"""`portal import synthea DIR`, `portal import csv FILE...` and `portal gaps --summary`.

Each import runs as one unit of work: the report is printed, then everything is committed
at once (rejected rows were never written). A progress bar per file goes to stderr.
"""
from __future__ import annotations

import sys
from datetime import date

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext

from portal.extensions import db
from portal.services.care_gap_rules import GapSettings, gap_counts
from portal.services.care_gaps import CARE_GAPS
from portal.services.campaigns import enrol_from_import
from portal.services.importers import ImportReport, import_csv, import_synthea
from portal.services.refills import complete_refills_from_facts


def register_import_cli(app: Flask) -> None:
    app.cli.add_command(import_group)
    app.cli.add_command(gaps)


class _Bars:
    """One click progress bar per file, sized by the file's line count."""

    def __init__(self, files: dict[str, int]) -> None:
        self.files, self.bar, self.name, self.done = files, None, None, 0

    def __call__(self, name: str, rows: int) -> None:
        if name != self.name:
            self.close()
            self.name, self.done = name, 0
            self.bar = click.progressbar(length=max(self.files.get(name, 0), 1), label=f"{name:<18}",
                                         file=sys.stderr, show_pos=True)
            self.bar.__enter__()
        self.bar.update(rows - self.done)
        self.done = rows

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _data_lines(path) -> int:
    try:
        with open(path, "rb") as handle:
            return max(sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b"")) - 1, 0)
    except OSError:
        return 0


def _finish(report: ImportReport, bars: _Bars) -> None:
    bars.close()
    for line in report.lines():
        click.echo(line)
    click.echo(f"enrolled by referral and procedure triggers: {enrol_from_import(db.session, report.started_at)}")
    click.echo(f"refill requests completed by new fills: {complete_refills_from_facts(db.session)}")
    db.session.commit()
    if report.failures:
        raise click.ClickException("some files could not be imported: " + "; ".join(report.failures))


import_group = AppGroup("import", help="Import patients and their history "
                                        "(idempotent: re-importing updates, never duplicates).")


@import_group.command("synthea")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--time-zone", default="", help="IANA time zone for new patients (Synthea has none).")
def import_synthea_command(directory: str, time_zone: str) -> None:
    """Import a Synthea CSV export directory (patients.csv, encounters.csv, ...)."""
    from pathlib import Path

    names = ("patients.csv", "encounters.csv", "conditions.csv", "procedures.csv", "immunizations.csv",
             "observations.csv", "medications.csv")
    bars = _Bars({name: _data_lines(Path(directory) / name) for name in names})
    report = import_synthea(db.session, directory, default_time_zone=time_zone, progress=bars)
    _finish(report, bars)


@import_group.command("csv")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--source", default="csv", show_default=True,
              help="Label for these facts; a second feed (e.g. an outside lab) keeps its own rows.")
@click.option("--region", default="US", show_default=True,
              help="Country for phone numbers written without a country code.")
@click.option("--time-zone", default="", help="IANA time zone for new patients whose file has no time_zone column.")
def import_csv_command(files: tuple[str, ...], source: str, region: str, time_zone: str) -> None:
    """Import clinic CSV files (a patients file and/or a facts file; see docs/import-format.md)."""
    from pathlib import Path

    bars = _Bars({Path(f).name: _data_lines(f) for f in files})
    try:
        report = import_csv(db.session, files, source=source, region=region.upper(), default_time_zone=time_zone,
                            progress=bars)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--source") from None
    _finish(report, bars)


@click.command("gaps")
@click.option("--summary", is_flag=True, required=True, help="Count patients per open care gap.")
@click.option("--as-of", "as_of", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help="Date to evaluate the rules on (default: today).")
@click.option("--wellness-months", type=click.IntRange(12, 18), default=12, show_default=True)
@with_appcontext
def gaps(summary: bool, as_of, wellness_months: int) -> None:
    """List how many patients have each care gap open, by tier."""
    day = as_of.date() if as_of else date.today()
    counts = gap_counts(db.session, day, GapSettings(wellness_months=wellness_months))
    click.echo(f"open care gaps as of {day.isoformat()}:")
    for code, count in counts.items():
        click.echo(f"  tier {CARE_GAPS[code].tier}  {code:<24} {count}")
