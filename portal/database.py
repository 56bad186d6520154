"""Engine and per-request session handling for SQLite and PostgreSQL.

A request (or CLI command, or worker batch) is the unit of work: routes call
services, then commit once; anything left uncommitted is rolled back at teardown.
"""
from __future__ import annotations

from typing import Any

from flask import Flask, current_app, g, has_app_context
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

# Set in `flask.g` by a request that only reads (a patient's GET page). Such a request
# may still write the session's idle-clock touch: see `commit_best_effort`.
READ_ONLY = "read_only_transaction"
SQLITE_BUSY_CODES = {5, 517}  # SQLITE_BUSY, SQLITE_BUSY_SNAPSHOT


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine tuned for the backend.

    SQLite runs in WAL mode with foreign keys on, and a transaction starts with
    BEGIN IMMEDIATE: a transaction that reads and then writes can otherwise fail at
    once with "database is locked" when another writer committed in between, instead
    of waiting for its turn. A request that only reads (see `READ_ONLY`) starts a
    plain deferred BEGIN instead: WAL readers never wait, so pages are not queued
    behind every other request's write lock.
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
            read_only = has_app_context() and g.get(READ_ONLY, False)
            connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

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


def commit_best_effort(session: Session) -> bool:
    """Commit a small best-effort write made inside a read-only SQLite transaction.

    A deferred transaction cannot take the write lock once another connection has
    committed since it began reading (SQLite answers "database is locked" at once,
    without waiting). The write is then rolled back and False returned; the caller
    must only use this for writes that are safe to lose and retry on the next request.
    """
    try:
        session.commit()
    except OperationalError as error:
        if getattr(error.orig, "sqlite_errorcode", None) not in SQLITE_BUSY_CODES:
            raise
        session.rollback()
        return False
    return True
