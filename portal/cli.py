"""The `portal` command: Flask's CLI plus our own commands. Commands call services
and commit once at the end, like a request."""
from __future__ import annotations

import json
import os
from dataclasses import asdict

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup
from werkzeug.serving import run_simple

from portal.cli_dispatch import dispatch_command
from portal.cli_import import register_import_cli
from portal.cli_report import report_command
from portal.extensions import db
from portal.migrate import upgrade_database
from portal.models import Role
from portal.services import staff_auth
from portal.services.errors import InvalidInput


def register_cli(app: Flask) -> None:
    app.cli.add_command(db_group)
    app.cli.add_command(demo)
    app.cli.add_command(create_staff)
    register_import_cli(app)
    app.cli.add_command(report_command)
    app.cli.add_command(dispatch_command)


@click.command("create-staff")
@click.argument("email")
@click.option("--role", required=True, type=click.Choice([r.value for r in Role]))
@click.option("--name", default="", help="Display name (defaults to the email).")
@click.password_option(help="First password (at least 12 characters); prompted when not given.")
def create_staff(email: str, role: str, name: str, password: str) -> None:
    """Create a staff account. They enrol their authenticator at first sign-in."""
    try:
        staff_auth.create_staff(db.session, email, role, name, password)
    except InvalidInput:
        raise click.ClickException("not created: unknown role, password under 12 characters, "
                                   "a malformed email, or an account with this email exists") from None
    db.session.commit()
    click.echo(f"created {email.strip().lower()} ({role})")


@click.group("db")
def db_group() -> None:
    """Database commands."""


@db_group.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration to the configured database."""
    upgrade_database(current_app.config["DATABASE_URL"])
    click.echo("database is up to date")


@click.command("demo")
@click.option("--port", default=5000, show_default=True, help="Port to serve on (127.0.0.1).")
@click.option("--seed-only", is_flag=True, help="Seed and print, but don't serve.")
@click.option("--json", "as_json", is_flag=True, help="Print the demo data as JSON.")
def demo(port: int, seed_only: bool, as_json: bool) -> None:
    """Create and migrate the database, seed the demo clinic, print patient links, serve."""
    from portal.services.demo import seed_demo

    if not os.environ.get("PORTAL_BASE_URL"):
        current_app.config["BASE_URL"] = f"http://127.0.0.1:{port}"  # the printed links open this server
    upgrade_database(current_app.config["DATABASE_URL"])
    patients, staff = seed_demo(db.session)
    db.session.commit()
    base_url = current_app.config["BASE_URL"]
    if as_json:
        click.echo(json.dumps({"base_url": base_url, "patients": [asdict(p) for p in patients],
                               "staff": [asdict(s) for s in staff]}, ensure_ascii=False))
    else:
        click.echo(f"Demo patients ({base_url}):")
        for patient in patients:
            click.echo(f"  {patient.name:<18} born {patient.birth_date}  [{patient.language}]  {patient.link}")
        click.echo(f"One-time codes appear at {base_url}/dev/outbox and on this console.")
        click.echo(f"Staff console: {base_url}/staff/login")
        for member in staff:
            click.echo(f"  {member.role:<17} {member.email}  password {member.password}  TOTP secret {member.totp_secret}")
    if not seed_only:
        # Flask ignores app.run() under its own CLI, so serve with Werkzeug directly.
        run_simple("127.0.0.1", port, current_app._get_current_object(), threaded=True)


def main() -> None:
    from portal import create_app

    FlaskGroup(create_app=create_app, add_version_option=False, load_dotenv=False)()
