"""Test fixtures: one migrated database per run (SQLite, or PostgreSQL when
PORTAL_TEST_DATABASE_URL is set), and each test inside a transaction that is rolled
back afterwards. Requests and the test share one connection through savepoints."""
from __future__ import annotations

import os
from contextlib import contextmanager

import pytest
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from portal import create_app
from portal.database import make_engine
from portal.extensions import db as portal_db
from portal.migrate import upgrade_database
from portal.models import Base

BASE_URL = "http://portal.test"


def reset_database(url: str) -> None:
    """Drop everything so the migrations run from an empty database."""
    engine = make_engine(url)
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
        else:
            Base.metadata.drop_all(connection)
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> str:
    url = os.environ.get("PORTAL_TEST_DATABASE_URL") or f"sqlite:///{tmp_path_factory.mktemp('db')}/test.sqlite3"
    reset_database(url)
    upgrade_database(url)
    return url


def make_test_app(database_url: str, **overrides):
    config = {"PORTAL_ENV": "testing", "DATABASE_URL": database_url, "BASE_URL": BASE_URL,
              "SECRET_KEY": "test-secret-key"}
    config.update(overrides)
    return create_app(config)


@pytest.fixture(scope="session")
def app(database_url):
    return make_test_app(database_url)


@pytest.fixture()
def connection(app):
    engine = app.extensions["portal_db"]["engine"]
    connection = engine.connect()
    outer = connection.begin()
    factory = sessionmaker(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    original = app.extensions["portal_db"]["factory"]
    portal_db.bind_factory(app, factory)
    yield connection, factory
    portal_db.bind_factory(app, original)
    outer.rollback()
    connection.close()


@pytest.fixture()
def db(connection):
    """A session for arranging data and checking results; it sees what requests wrote."""
    _connection, factory = connection
    session = factory()
    yield session
    session.close()


@pytest.fixture()
def in_app(app):
    """Run service code that needs the app (secret key, templates) outside a request."""
    @contextmanager
    def context():
        with app.test_request_context():
            yield
    return context


@pytest.fixture()
def client(app, connection):
    return app.test_client()
