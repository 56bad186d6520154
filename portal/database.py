"""Engine and per-request session handling for SQLite and PostgreSQL.

A request (or CLI command, or worker batch) is the unit of work: routes call
services, then commit once; anything left uncommitted is rolled back at teardown.
"""
from __future__ import annotations

from typing import Any

from flask import Flask, current_app, g
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine tuned for the backend.

    SQLite runs in WAL mode with foreign keys on, and every transaction starts with
    BEGIN IMMEDIATE: a transaction that reads and then writes can otherwise fail at
    once with "database is locked" when another writer committed in between, instead
    of waiting for its turn. Readers still never block on WAL.
    """
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection, _record):  # pragma: no cover - exercised by every test
            dbapi_connection.isolation_level = None  # let SQLAlchemy emit BEGIN itself
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            if ":memory:" not in url:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection):
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


class Database:
    """Binds one engine per app and hands out one session per app context."""

    def init_app(self, app: Flask) -> None:
        engine = make_engine(app.config["DATABASE_URL"])
        app.extensions["portal_db"] = {"engine": engine, "factory": sessionmaker(bind=engine, expire_on_commit=False)}
        app.teardown_appcontext(self._close)

    @staticmethod
    def _state() -> dict:
        return current_app.extensions["portal_db"]

    @property
    def engine(self) -> Engine:
        return self._state()["engine"]

    @property
    def session(self) -> Session:
        if "db_session" not in g:
            g.db_session = self._state()["factory"]()
        return g.db_session

    def bind_factory(self, app: Flask, factory: sessionmaker) -> None:
        """Replace the session factory (tests bind sessions to an outer transaction)."""
        app.extensions["portal_db"]["factory"] = factory

    @staticmethod
    def _close(_exc: BaseException | None) -> None:
        session: Session | None = g.pop("db_session", None)
        if session is not None:
            session.rollback()
            session.close()
