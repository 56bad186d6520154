"""The migrations build exactly the schema the models describe: upgrade an empty
database (a fresh SQLite file, and a fresh PostgreSQL schema when
PORTAL_TEST_DATABASE_URL is set) and let Alembic's autogenerate find no difference."""
from __future__ import annotations

import os
import secrets
from urllib.parse import quote

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from portal.database import make_engine
from portal.migrate import alembic_config, upgrade_database
from portal.models import Base

PG_URL = os.environ.get("PORTAL_TEST_DATABASE_URL", "")


def differences(url: str) -> tuple[list, str | None, set[str]]:
    """What autogenerate would still change, the revision the database is at, and its tables."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            # The same comparison `alembic revision --autogenerate` makes (see migrations/env.py).
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return (compare_metadata(context, Base.metadata), context.get_current_revision(),
                    set(inspect(connection).get_table_names()))
    finally:
        engine.dispose()


def head() -> str:
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1, f"the migrations have {len(heads)} heads {heads}: merge them"
    return heads[0]


def assert_matches_models(url: str) -> None:
    diff, revision, tables = differences(url)
    assert diff == [], "the migrations and the models differ:\n" + "\n".join(map(repr, diff))
    assert revision == head()
    assert set(Base.metadata.tables) <= tables


def test_the_migrations_have_one_head():
    assert head()


def test_upgrading_an_empty_sqlite_file_matches_the_models(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    upgrade_database(url)
    assert_matches_models(url)
    upgrade_database(url)  # running it again is a no-op
    assert_matches_models(url)


@pytest.fixture()
def empty_pg_schema():
    """A new, empty schema in the PostgreSQL test database, dropped afterwards."""
    if not PG_URL.startswith("postgresql"):
        pytest.skip("PORTAL_TEST_DATABASE_URL does not point at PostgreSQL")
    schema = f"migration_check_{secrets.token_hex(4)}"
    admin = make_engine(PG_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_upgrading_an_empty_postgresql_schema_matches_the_models(empty_pg_schema):
    _diff, _revision, tables = differences(empty_pg_schema)
    assert tables == set(), "the schema should start empty"
    upgrade_database(empty_pg_schema)
    assert_matches_models(empty_pg_schema)


def test_the_test_database_matches_the_models(database_url):
    """The database every other test runs on was built by the same migrations."""
    assert_matches_models(database_url)
