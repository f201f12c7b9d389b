"""The tracking and auth databases on PostgreSQL: created when missing, dropped on request."""

from __future__ import annotations

import psycopg
from psycopg import sql

from visionops.server.settings import ServerConfigError, ServerSettings


def _admin_connection(settings: ServerSettings) -> psycopg.Connection:
    # CREATE/DROP DATABASE cannot run inside a transaction.
    try:
        return psycopg.connect(
            settings.database_uri("postgres"), autocommit=True, connect_timeout=5
        )
    except psycopg.OperationalError as error:
        raise ServerConfigError(
            f"cannot reach PostgreSQL at {settings.postgres_uri}: {str(error).strip()}"
        ) from error


def ensure_databases(settings: ServerSettings) -> list[str]:
    """Create the tracking and auth databases that do not exist yet; returns those created."""
    created = []
    with _admin_connection(settings) as connection:
        for name in (settings.tracking_db, settings.auth_db):
            exists = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                created.append(name)
    return created


def drop_databases(settings: ServerSettings) -> None:
    """Drop both databases (disconnecting their sessions first)."""
    with _admin_connection(settings) as connection:
        for name in (settings.tracking_db, settings.auth_db):
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
