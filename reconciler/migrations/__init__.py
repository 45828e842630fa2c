"""Sequential migrations of the tool's own `cloud_*` tables, and the shape check before them.

Migrations are the numbered `NNNN_name.sql` files beside this module, applied in order, each in
its own transaction together with its row in `cloud_reconciler_migrations`. Nothing outside
`cloud_*` is ever created, altered or written: kuploy core shares this database.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql

from reconciler.errors import MigrationsInterrupted, SchemaError
from reconciler.model import CLOUD_PLANS_COLUMNS, LIMIT_COLUMNS

LEDGER = "cloud_reconciler_migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


def all_migrations() -> tuple[Migration, ...]:
    found = []
    for entry in resources.files(__package__).iterdir():
        if match := _NAME.match(entry.name):
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return tuple(sorted(found, key=lambda m: m.version))


def _table_exists(conn: psycopg.Connection, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def applied_versions(conn: psycopg.Connection) -> set[int]:
    if not _table_exists(conn, LEDGER):
        return set()
    query = sql.SQL("SELECT version FROM {}").format(sql.Identifier(LEDGER))
    return {version for (version,) in conn.execute(query)}


def pending(conn: psycopg.Connection) -> tuple[Migration, ...]:
    done = applied_versions(conn)
    return tuple(m for m in all_migrations() if m.version not in done)


# Column → accepted data types, text unless in _NOT_TEXT. "planId" must also be unique (upserts key on it).
_TEXT = ("text", "character varying")
_INT = ("integer", "bigint")
_NOT_TEXT: dict[str, tuple[str, ...]] = {
    "price": _INT,
    **{column: _INT for column in LIMIT_COLUMNS.values()},
    "features": ("jsonb",),
    "isDefault": ("boolean",),
    "isActive": ("boolean",),
}
EXPECTED_COLUMNS: dict[str, tuple[str, ...]] = {
    column: _NOT_TEXT.get(column, _TEXT) for column in CLOUD_PLANS_COLUMNS
}


def check_cloud_plans(conn: psycopg.Connection) -> None:
    """Stop before any write if an existing `cloud_plans` cannot hold what the tool writes."""
    if not _table_exists(conn, "cloud_plans"):
        return
    rows = conn.execute(
        """
        SELECT column_name, data_type, is_nullable, column_default IS NOT NULL OR is_identity = 'YES'
          FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = 'cloud_plans'
        """
    ).fetchall()
    columns = {name: (dtype, nullable == "YES", has_default) for name, dtype, nullable, has_default in rows}
    problems = []
    for column, accepted in EXPECTED_COLUMNS.items():
        if column not in columns:
            problems.append(f'column "{column}" is missing')
        elif columns[column][0] not in accepted:
            problems.append(f'column "{column}" is {columns[column][0]}, expected {" or ".join(accepted)}')
    for column, (_dtype, nullable, has_default) in columns.items():
        if column not in EXPECTED_COLUMNS and not nullable and not has_default:
            problems.append(
                f'extra column "{column}" is NOT NULL without a default, so rows cannot be inserted'
            )
    unique = conn.execute(
        """
        SELECT 1 FROM pg_index i
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
         WHERE i.indrelid = to_regclass('cloud_plans') AND i.indisunique AND i.indnkeyatts = 1
           AND a.attname = 'planId'
        """
    ).fetchone()
    if "planId" in columns and unique is None:
        problems.append('column "planId" is not a primary key or unique')
    if problems:
        raise SchemaError(
            "cloud_plans exists with an incompatible shape: " + "; ".join(problems) + ". Nothing was written."
        )


def migrate(conn: psycopg.Connection) -> tuple[str, ...]:
    """Apply pending migrations in order; returns their labels. Caller holds the advisory lock."""
    check_cloud_plans(conn)
    todo = pending(conn)
    if not todo:
        return ()
    applied: list[Migration] = []
    try:
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (version integer PRIMARY KEY, name text NOT NULL, "
                '"appliedAt" timestamptz NOT NULL DEFAULT now())'
            ).format(sql.Identifier(LEDGER))
        )
        for migration in todo:
            with conn.transaction():
                conn.execute(migration.sql)
                conn.execute(
                    sql.SQL("INSERT INTO {} (version, name) VALUES (%s, %s)").format(sql.Identifier(LEDGER)),
                    (migration.version, migration.name),
                )
            applied.append(migration)
    except KeyboardInterrupt:
        raise _interrupted(conn, todo, applied) from None
    return tuple(m.label for m in todo)


def _interrupted(
    conn: psycopg.Connection, todo: tuple[Migration, ...], applied: list[Migration]
) -> MigrationsInterrupted:
    """What Ctrl-C left: psycopg cancelled the statement running and its transaction rolled back.
    The ledger says which committed (also one whose COMMIT the interrupt hit); if it cannot be
    read, the migrations counted as committed here."""
    done = {m.version for m in applied}
    with contextlib.suppress(psycopg.Error):
        done = applied_versions(conn)
    return MigrationsInterrupted(
        applied=tuple(m.label for m in todo if m.version in done),
        not_applied=tuple(m.label for m in todo if m.version not in done),
    )
