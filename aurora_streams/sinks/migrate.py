"""Versioned SQL migrations (``migrations/NNNN_name.sql``), applied in order, once.

Files named ``*.timescale.sql`` apply only where the timescaledb extension is available;
elsewhere they stay pending (and are retried by the next ``migrate``). Each migration runs
in its own transaction and is recorded in ``schema_migrations``; an advisory lock keeps
concurrent workers from migrating at the same time.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Final

import asyncpg

__all__ = ["Migration", "migrate", "migrations"]

log = logging.getLogger(__name__)

_LOCK_KEY: Final = 0x4155524F5241  # "AURORA"
_NAME_RE: Final = re.compile(r"^(\d{4})_([a-z0-9_]+?)(\.timescale)?\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    timescale_only: bool
    sql: str


def migrations() -> list[Migration]:
    found = []
    for entry in resources.files("aurora_streams.sinks").joinpath("migrations").iterdir():
        match = _NAME_RE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], bool(match[3]), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations; returns the names applied."""
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY,"
        " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        applied = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        timescale = bool(
            await conn.fetchval("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'")
        )
        done = []
        for m in migrations():
            if m.version in applied:
                continue
            if m.timescale_only and not timescale:
                log.info("migration %04d_%s skipped: timescaledb is not available", m.version, m.name)
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name
                )
            log.info("migration %04d_%s applied", m.version, m.name)
            done.append(f"{m.version:04d}_{m.name}")
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
