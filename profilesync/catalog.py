"""The profile table as the catalog describes it, and whether a mapping fits it (`profilesync config check`,
migrate's preflight). Reading is one query; judging (check) is pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from profilesync.mapping import DEFAULT, ProfileMapping


@dataclass(frozen=True)
class ColumnFacts:
    name: str
    type_name: str
    textual: bool  # of the string type category (text, varchar, char, citext): a mapped value fits it
    not_null: bool
    has_default: bool  # a default, an identity or a generated column: an INSERT need not name it
    generated: bool


@dataclass(frozen=True)
class TableFacts:
    columns: tuple[ColumnFacts, ...]
    primary_key: tuple[str, ...]
    # the primary key column, when it references auth.users (id); and whether that reference cascades deletes
    user_key: str | None
    cascades: bool

    def column(self, name: str) -> ColumnFacts | None:
        return next((c for c in self.columns if c.name == name), None)


# The seed's table as migrate creates it (sql/0001_tables.sql), for a database that does not have it yet.
SEED_FACTS = TableFacts(
    columns=(
        ColumnFacts("id", "uuid", False, True, False, False),
        ColumnFacts("email", "text", True, False, False, False),
        ColumnFacts("full_name", "text", True, False, False, False),
        ColumnFacts("avatar_url", "text", True, False, False, False),
        ColumnFacts("preferences", "jsonb", False, True, True, False),
        ColumnFacts("created_at", "timestamp with time zone", False, True, True, False),
        ColumnFacts("updated_at", "timestamp with time zone", False, True, True, False),
    ),
    primary_key=("id",),
    user_key="id",
    cascades=True,
)

_COLUMNS = """
SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), t.typcategory = 'S', a.attnotnull,
       a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '', a.attgenerated <> ''
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = %(rel)s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
_PRIMARY_KEY = """
SELECT array_agg(a.attname::text ORDER BY k.ord)
FROM pg_catalog.pg_constraint c
CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
WHERE c.conrelid = %(rel)s AND c.contype = 'p'
"""
# A single-column foreign key from the table to auth.users (id).
_USER_KEY = """
SELECT a.attname, c.confdeltype = 'c'
FROM pg_catalog.pg_constraint c
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
JOIN pg_catalog.pg_attribute r ON r.attrelid = c.confrelid AND r.attnum = c.confkey[1]
WHERE c.conrelid = %(rel)s AND c.contype = 'f' AND pg_catalog.cardinality(c.conkey) = 1
  AND c.confrelid = pg_catalog.to_regclass('auth.users') AND r.attname = 'id'
ORDER BY c.confdeltype = 'c' DESC
"""


def read_table(conn: psycopg.Connection[Any], mapping: ProfileMapping) -> TableFacts | None:
    """The facts of the mapping's table, or None when it does not exist."""
    row = conn.execute(
        "SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (mapping.schema, mapping.table),
    ).fetchone()
    if row is None:
        return None
    params = {"rel": row[0]}
    columns = tuple(ColumnFacts(*r) for r in conn.execute(_COLUMNS, params).fetchall())
    key_row = conn.execute(_PRIMARY_KEY, params).fetchone()
    primary_key = tuple(key_row[0] or ()) if key_row else ()
    user_keys = [(name, cascades) for name, cascades in conn.execute(_USER_KEY, params).fetchall()]
    user_key = next(((n, c) for n, c in user_keys if (n,) == primary_key), None)
    return TableFacts(
        columns=columns,
        primary_key=primary_key,
        user_key=user_key[0] if user_key else None,
        cascades=bool(user_key and user_key[1]),
    )


def check(mapping: ProfileMapping, facts: TableFacts | None) -> list[str]:
    """What keeps `mapping` from working on a table with these facts, one line each naming the config key
    (empty: it fits). A missing seed table is fine: migrate creates it."""
    if facts is None:
        if mapping.is_seed:
            return []
        return [f"profile.table: {mapping.qualified} does not exist (create it first, then migrate)"]
    problems = []
    if facts.user_key is None:
        problems.append(
            f"profile.table: the primary key of {mapping.qualified} must be one uuid column referencing "
            "auth.users (id)"
        )
    mapped = {column.name for column in mapping.columns}
    for column in mapping.columns:
        key = f"profile.columns.{column.name}"
        found = facts.column(column.name)
        if found is None:
            problems.append(f"{key}: {mapping.qualified} has no column {column.name}")
        elif column.name in facts.primary_key:
            problems.append(f"{key}: the primary key is the user's id, not a mapped value")
        elif found.generated:
            problems.append(f"{key}: {column.name} is a generated column")
        elif not found.textual:
            problems.append(f"{key}: {column.name} is {found.type_name}; only text-like columns are mapped")
    for found in facts.columns:
        if (
            found.not_null
            and not found.has_default
            and found.name not in mapped
            and found.name not in facts.primary_key
        ):
            problems.append(
                f"profile.columns.{found.name}: {mapping.qualified}.{found.name} is NOT NULL without a "
                "default and no source fills it"
            )
    return problems


@dataclass(frozen=True)
class ProfileTable:
    """Where a user's profile lives, for the operator queries composed around it (backfill, doctor)."""

    schema: str
    table: str
    key: str  # the column holding the user's id
    # the mapped columns, each with whether it is NOT NULL (scrubbed to the user's id instead of NULL)
    personal: tuple[tuple[str, bool], ...] = ()

    @classmethod
    def of(cls, mapping: ProfileMapping, facts: TableFacts) -> ProfileTable:
        personal = tuple(
            (c.name, bool((found := facts.column(c.name)) and found.not_null)) for c in mapping.columns
        )
        return cls(mapping.schema, mapping.table, facts.user_key or "id", personal)

    @property
    def name(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.table)

    def has_profile(self, user_id: sql.Composable) -> sql.Composed:
        """`EXISTS (…)`: the user whose id is the expression `user_id` has a profile (one index probe)."""
        return sql.SQL("EXISTS (SELECT 1 FROM {} p WHERE p.{} = {})").format(
            self.name, sql.Identifier(self.key), user_id
        )

    def holds_personal_data(self, alias: str) -> sql.Composed:
        """True when the profile row `alias` holds a mapped value the soft-delete scrub clears."""
        row = sql.Identifier(alias)
        cleared = [
            sql.SQL("{}.{} IS DISTINCT FROM {}").format(
                row,
                sql.Identifier(column),
                sql.SQL("{}.{}::text").format(row, sql.Identifier(self.key)) if not_null else sql.SQL("NULL"),
            )
            for column, not_null in self.personal
        ]
        return sql.SQL("({})").format(sql.SQL(" OR ").join(cleared) if cleared else sql.SQL("false"))


def profile_table(conn: psycopg.Connection[Any], mapping: ProfileMapping) -> ProfileTable:
    return ProfileTable.of(mapping, read_table(conn, mapping) or SEED_FACTS)


SEED_TABLE = ProfileTable.of(DEFAULT, SEED_FACTS)
