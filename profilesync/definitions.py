"""The live definitions of profilesync's functions, triggers, policies and grants (sql/definitions/*.sql).

Migrations (sql/NNNN_*.sql) change tables, columns, indexes and roles, once each. Everything else has one
definition, a file per concern, rendered for a `Context` (which profile table, which id column, ...) and
applied as a whole, in file order, whenever the rendered text differs from what the database recorded
(profile_sync.definitions: a checksum per file) or the catalog drifted from what the last apply left
(profile_sync.definition_objects: the state of every object of ours, as `STATE` reads it). Every statement
of a definition is safe to run again: CREATE OR REPLACE, policies dropped and re-created, privileges revoked
and granted as a whole. So an install upgraded through every release and a fresh install end with the same
objects, and `profilesync doctor` can tell which object no longer matches its definition.

Templates name context values as {{name}} (see `Context.values`); a file whose first line is `-- needs: NAME`
is rendered only when the context provides NAME (`Context.provides`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

from profilesync import profilesql
from profilesync.catalog import SEED_FACTS, ProfileTable, TableFacts
from profilesync.errors import MigrationError
from profilesync.mapping import DEFAULT, ProfileMapping

DEFINITIONS_PACKAGE = "profilesync.sql"
DEFINITIONS_DIR = "definitions"
_FILE = re.compile(r"^\d{2}_[a-z0-9_]+\.sql$")
_PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")
_NEEDS = re.compile(r"\A-- needs: ([a-z_, ]+)\n")
_SIMPLE_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
# PostgreSQL's reserved key words: quoted when used as a name.
_RESERVED = frozenset(
    {
        *("all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric", "authorization"),
        *("between", "binary", "both", "case", "cast", "check", "collate", "collation", "column"),
        *("concurrently", "constraint", "create", "cross", "current_catalog", "current_date", "current_role"),
        *("current_schema", "current_time", "current_timestamp", "current_user", "default", "deferrable"),
        *("desc", "distinct", "do", "else", "end", "except", "false", "fetch", "for", "foreign", "freeze"),
        *("from", "full", "grant", "group", "having", "ilike", "in", "initially", "inner", "intersect"),
        *("into", "is", "isnull", "join", "lateral", "leading", "left", "like", "limit", "localtime"),
        *("localtimestamp", "natural", "not", "notnull", "null", "offset", "on", "only", "or", "order"),
        *("outer", "overlaps", "placing", "primary", "references", "returning", "right", "select"),
        *("session_user", "similar", "some", "symmetric", "system_user", "table", "tablesample", "then"),
        *("to", "trailing", "true", "union", "unique", "user", "using", "variadic", "verbose", "when"),
        *("where", "window", "with"),
    }
)


def quote_ident(name: str) -> str:
    """An SQL identifier as PostgreSQL's quote_ident writes it: bare when it may be, else double-quoted."""
    if _SIMPLE_IDENTIFIER.match(name) and name not in _RESERVED:
        return name
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class Name:
    """A schema-qualified relation name."""

    schema: str
    name: str

    def sql(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


SEED_PROFILE = Name("public", "user_profiles")
SEED_CHAT = Name("public", "chat_conversations")


@dataclass(frozen=True)
class Context:
    """What the definitions are rendered for. The defaults are the seed application's schema."""

    profile: Name = SEED_PROFILE  # the profile table: its primary key references auth.users(id)
    profile_id: str = "id"  # that primary key column
    chat: Name | None = SEED_CHAT  # the chat service's conversations table; None: no chat tables
    mapping: ProfileMapping = DEFAULT  # which auth.users values fill which profile columns
    facts: TableFacts = SEED_FACTS  # the profile table as the catalog describes it

    @classmethod
    def of(cls, mapping: ProfileMapping, facts: TableFacts) -> Context:
        """The context of a profile mapping and its table; the seed's chat table only with the seed's."""
        return cls(
            profile=Name(mapping.schema, mapping.table),
            profile_id=facts.user_key or "id",
            chat=SEED_CHAT if mapping.is_seed else None,
            mapping=mapping,
            facts=facts,
        )

    def values(self) -> dict[str, str]:
        """The {{name}} substitutions of the templates."""
        values = {
            "profile": self.profile.sql(),
            "profile_literal": quote_literal(self.profile.sql()),
            "profile_id": quote_ident(self.profile_id),
            "profile_id_literal": quote_literal(self.profile_id),
            "sync_profiles": profilesql.sync_profiles(*self._mapped()).rstrip("\n"),
            "update_trigger": profilesql.update_trigger(self.mapping).rstrip("\n"),
            "profile_personal": ProfileTable.of(*self._mapped()).holds_personal_data("p").as_string(),
        }
        if self.chat is not None:
            values |= {"chat": self.chat.sql(), "chat_literal": quote_literal(self.chat.sql())}
        return values

    def _mapped(self) -> tuple[ProfileMapping, TableFacts]:
        """The mapping and table facts for this context's profile table (`profile`, `profile_id` win)."""
        mapping = dataclasses.replace(self.mapping, schema=self.profile.schema, table=self.profile.name)
        return mapping, dataclasses.replace(self.facts, user_key=self.profile_id)

    def provides(self, need: str) -> bool:
        if need == "chat":
            return self.chat is not None
        if need == "seed":
            return self.mapping.is_seed
        raise MigrationError(f"definitions: unknown need {need!r}")


@dataclass(frozen=True)
class Definition:
    """One rendered definition file."""

    name: str  # the file name without .sql, e.g. 03_auth_users
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def templates() -> list[tuple[str, str]]:
    """(name, template text) of every definition file, in apply order."""
    try:
        folder = resources.files(DEFINITIONS_PACKAGE).joinpath(DEFINITIONS_DIR)
        entries = sorted(folder.iterdir(), key=lambda e: e.name)
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise MigrationError(
            f"package data {DEFINITIONS_PACKAGE}/{DEFINITIONS_DIR} is missing: reinstall profilesync"
        ) from exc
    found = []
    for entry in entries:
        if not entry.is_file() or not entry.name.endswith(".sql"):
            continue
        if not _FILE.match(entry.name):
            raise MigrationError(f"definitions/{entry.name} is not named NN_name.sql")
        found.append((entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8")))
    if not found:
        raise MigrationError(f"no definitions in package data {DEFINITIONS_PACKAGE}: reinstall profilesync")
    return found


def render_one(name: str, template: str, values: Mapping[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise MigrationError(f"definitions/{name}.sql: no value for {{{{{key}}}}}")
        return values[key]

    return _PLACEHOLDER.sub(substitute, template)


def render(context: Context) -> list[Definition]:
    """Every definition the context needs, rendered, in apply order."""
    values = context.values()
    rendered = []
    for name, template in templates():
        needs = _NEEDS.match(template)
        if needs and not all(context.provides(n.strip()) for n in needs.group(1).split(",")):
            continue
        rendered.append(Definition(name, render_one(name, template, values)))
    return rendered


# -- what the definitions create, read from their text (the objects check's inventory) ----------------------

_FUNCTION = re.compile(r"CREATE OR REPLACE FUNCTION\s+([\w.]+)\(([^)]*)\)")
_TRIGGER = re.compile(r"CREATE OR REPLACE TRIGGER\s+(\w+)\s.*?\bON\s+([\w.\"]+)", re.DOTALL)


@dataclass(frozen=True)
class Inventory:
    functions: tuple[str, ...]  # regprocedure text, e.g. profile_sync.sync_profiles(uuid[], text)
    triggers: tuple[tuple[str, str], ...]  # (table, trigger name)


def _argument_types(arguments: str) -> str:
    """The identity of a parameter list as to_regprocedure reads it: types only, OUT parameters left out."""
    types = []
    for argument in filter(None, (a.strip() for a in arguments.split(","))):
        words = re.split(r"\s+DEFAULT\s+|\s*=\s*", argument, maxsplit=1)[0].split()
        if words[0].upper() == "OUT":
            continue
        if words[0].upper() in ("IN", "INOUT", "VARIADIC"):
            words = words[1:]
        types.append(" ".join(words[1:]) if len(words) > 1 else words[0])
    return ", ".join(types)


def inventory(definitions: list[Definition]) -> Inventory:
    text = "\n".join(d.sql for d in definitions)
    functions = tuple(f"{m.group(1)}({_argument_types(m.group(2))})" for m in _FUNCTION.finditer(text))
    triggers = tuple((m.group(2), m.group(1)) for m in _TRIGGER.finditer(text))
    return Inventory(functions, triggers)


# -- the catalog's view of our objects ----------------------------------------------------------------------

# One row per object of ours with everything that makes it what it is: a function's whole definition
# (pg_get_functiondef: language, volatility, SECURITY DEFINER, its SET options, body) and its privileges; a
# trigger's definition and whether it fires; a policy's command, roles and expressions, and the table's row
# level security; the privileges on schema profile_sync and on each table and sequence in it (columns
# included). Privileges are sorted: the order of grants is not a difference. Names and deparsed expressions
# depend on search_path (a relation or function visible through it is written unqualified): read with
# search_path = pg_catalog only, so every name is schema-qualified whoever reads.
STATE = r"""
SELECT 'function ' || pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(p.proname)
         || '(' || pg_catalog.oidvectortypes(p.proargtypes) || ')' AS object,
       pg_catalog.pg_get_functiondef(p.oid) || 'privileges: '
         || (SELECT coalesce(pg_catalog.string_agg(a::text, ' ' ORDER BY a::text), 'default')
             FROM pg_catalog.unnest(p.proacl) a) AS state
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE p.pronamespace = pg_catalog.to_regnamespace('profile_sync')
   OR p.oid = pg_catalog.to_regprocedure('public.ensure_profile()')
UNION ALL
SELECT 'trigger ' || t.tgname || ' on ' || t.tgrelid::pg_catalog.regclass::text,
       pg_catalog.pg_get_triggerdef(t.oid)
         || CASE t.tgenabled WHEN 'D' THEN ' (disabled)' WHEN 'R' THEN ' (replica only)' ELSE '' END
FROM pg_catalog.pg_trigger t
WHERE t.tgname LIKE 'profile\_sync\_%' AND NOT t.tgisinternal
UNION ALL
SELECT 'policy ' || p.polname || ' on ' || c.oid::pg_catalog.regclass::text,
       pg_catalog.concat_ws(' | ', p.polcmd,
         CASE WHEN p.polpermissive THEN 'permissive' ELSE 'restrictive' END,
         (SELECT pg_catalog.string_agg(r::pg_catalog.regrole::text, ', ' ORDER BY r::pg_catalog.regrole::text)
          FROM pg_catalog.unnest(p.polroles) r),
         'using ' || pg_catalog.pg_get_expr(p.polqual, p.polrelid),
         'check ' || pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid),
         CASE WHEN c.relrowsecurity THEN 'row level security on' ELSE 'row level security off' END)
FROM pg_catalog.pg_policy p
JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
WHERE p.polname LIKE 'profile\_sync\_%'
UNION ALL
SELECT 'schema profile_sync',
       'privileges: ' || (SELECT coalesce(pg_catalog.string_agg(a::text, ' ' ORDER BY a::text), 'default')
                          FROM pg_catalog.unnest(n.nspacl) a)
FROM pg_catalog.pg_namespace n
WHERE n.nspname = 'profile_sync'
UNION ALL
SELECT CASE c.relkind WHEN 'S' THEN 'sequence ' ELSE 'table ' END || c.oid::pg_catalog.regclass::text,
       'privileges: ' || (SELECT coalesce(pg_catalog.string_agg(a::text, ' ' ORDER BY a::text), 'default')
                          FROM pg_catalog.unnest(c.relacl) a)
         || coalesce('; columns: ' || (
              SELECT pg_catalog.string_agg(
                       col.attname || ' ' || (SELECT pg_catalog.string_agg(a::text, ' ' ORDER BY a::text)
                                              FROM pg_catalog.unnest(col.attacl) a),
                       ', ' ORDER BY col.attname)
              FROM pg_catalog.pg_attribute col
              WHERE col.attrelid = c.oid AND col.attacl IS NOT NULL AND NOT col.attisdropped), '')
FROM pg_catalog.pg_class c
WHERE c.relnamespace = pg_catalog.to_regnamespace('profile_sync') AND c.relkind IN ('r', 'p', 'v', 'S')
"""


_RECORD = (
    "DELETE FROM profile_sync.definitions;\n"
    "INSERT INTO profile_sync.definitions (name, checksum) VALUES\n  {rows};\n"
    "DO $record$\n"
    "BEGIN\n"
    "  PERFORM pg_catalog.set_config('search_path', 'pg_catalog', true);\n"
    "  DELETE FROM profile_sync.definition_objects;\n"
    "  INSERT INTO profile_sync.definition_objects (object, state)\n"
    "  SELECT s.object, s.state FROM ({state}) s;\n"
    "END\n"
    "$record$;\n"
)


def record(definitions: list[Definition]) -> str:
    """The SQL that records these definitions and the catalog state they left as applied."""
    rows = ",\n  ".join(f"({quote_literal(d.name)}, {quote_literal(d.checksum)})" for d in definitions)
    return _RECORD.format(rows=rows, state=STATE)


def script(definitions: list[Definition]) -> str:
    """Every definition and its recording as one SQL text (what --emit-supabase writes)."""
    parts = [f"-- definition {d.name}\n{d.sql.rstrip()}\n" for d in definitions]
    return "\n".join(
        [
            *parts,
            "-- recorded as applied: profilesync migrate and doctor compare against it\n"
            + record(definitions),
        ]
    )


def state(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """What the catalog holds now, object → state (read with search_path = pg_catalog, then restored)."""
    with conn.transaction():
        path = conn.execute("SELECT pg_catalog.current_setting('search_path')").fetchone()
        conn.execute("SELECT pg_catalog.set_config('search_path', 'pg_catalog', true)")
        found = {row[0]: row[1] for row in conn.execute(STATE)}
        conn.execute("SELECT pg_catalog.set_config('search_path', %s, true)", (path[0] if path else "",))
    return found


def _recorded(conn: psycopg.Connection[Any], query: str) -> dict[str, str] | None:
    exists = conn.execute("SELECT to_regclass('profile_sync.definition_objects') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return None
    return {row[0]: row[1] for row in conn.execute(query)}


def outdated(conn: psycopg.Connection[Any], definitions: list[Definition]) -> list[str]:
    """Names of the definitions whose rendered text this database has not applied (or no longer needs)."""
    applied = _recorded(conn, "SELECT name, checksum FROM profile_sync.definitions") or {}
    wanted = {d.name: d.checksum for d in definitions}
    return sorted(name for name in wanted.keys() | applied.keys() if wanted.get(name) != applied.get(name))


def drift(conn: psycopg.Connection[Any]) -> list[str]:
    """Objects that differ from the state the last apply recorded, one short line each ("changed", "missing",
    "not from a definition"); empty when none, or when nothing was recorded yet (see `outdated`)."""
    recorded = _recorded(conn, "SELECT object, state FROM profile_sync.definition_objects")
    if not recorded:
        return []
    live = state(conn)
    lines = []
    for name in sorted(recorded.keys() | live.keys()):
        before, now = recorded.get(name), live.get(name)
        if before == now:
            continue
        if now is None:
            lines.append(f"{name} missing")
        elif before is None:
            lines.append(f"{name} not from a definition")
        elif now.endswith("(disabled)") or now.endswith("(replica only)"):
            lines.append(f"{name} {now.rsplit('(', 1)[1].rstrip(')')}")
        else:
            lines.append(f"{name} changed")
    return lines


# -- the guards on columns that reference the profile table (sql/definitions/07_client_guard.sql) ------------

_REFERENCES = """
SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) || '.'
         || pg_catalog.quote_ident(r.column_name),
       EXISTS (
         SELECT 1 FROM pg_catalog.pg_trigger t
         WHERE t.tgrelid = r.referencing AND t.tgname = profile_sync.guard_name(r.column_name)
           AND t.tgfoid = 'profile_sync.guard_profile_reference()'::pg_catalog.regprocedure
           AND t.tgenabled IN ('O', 'A'))
FROM profile_sync.profile_references() r
JOIN pg_catalog.pg_class c ON c.oid = r.referencing
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
ORDER BY 1
"""
_STALE_GUARDS = """
SELECT count(*) FROM pg_catalog.pg_trigger t
WHERE t.tgfoid = 'profile_sync.guard_profile_reference()'::pg_catalog.regprocedure
  AND NOT EXISTS (SELECT 1 FROM profile_sync.profile_references() r
                  WHERE r.referencing = t.tgrelid AND profile_sync.guard_name(r.column_name) = t.tgname)
"""


@dataclass(frozen=True)
class Guards:
    """The columns that reference the profile table (schema.table.column), those without an enabled guard,
    and how many guards are left on columns that no longer reference it."""

    references: list[str]
    unguarded: list[str]
    stale: int


def guards(conn: psycopg.Connection[Any]) -> Guards | None:
    """None before the definitions were first applied (the guards' own functions are missing)."""
    exists = conn.execute(
        "SELECT pg_catalog.to_regprocedure('profile_sync.guard_profile_reference()') IS NOT NULL"
        " AND pg_catalog.to_regprocedure('profile_sync.profile_references()') IS NOT NULL"
    ).fetchone()
    if not exists or not exists[0]:
        return None
    found = conn.execute(_REFERENCES).fetchall()
    stale = conn.execute(_STALE_GUARDS).fetchone()
    return Guards([r[0] for r in found], [r[0] for r in found if not r[1]], int(stale[0]) if stale else 0)


def apply(conn: psycopg.Connection[Any], definitions: list[Definition]) -> None:
    """Apply every definition in order and record them, in the caller's transaction."""
    for definition in definitions:
        try:
            conn.execute(definition.sql.encode())
        except psycopg.Error as exc:
            raise MigrationError(f"definitions/{definition.name}.sql: {exc}") from exc
    conn.execute(record(definitions).encode())
