"""The SQL a profile mapping renders to: the function that creates, updates and scrubs profiles
(profile_sync.sync_profiles, behind every path that makes a profile: worker, client guards, ensure_profile(),
the chat fallback, backfill) and the update trigger on auth.users that watches the mapped sources.

Pure. Every name from the config reaches SQL through psycopg.sql.Identifier / Literal (quoted, never
interpreted); every other word is ours.

Rejected values. The app's constraints may refuse a mapped value (a taken username, a CHECK on its length, a
varchar too short). The batch runs as one statement (the fast path); when it fails on a constraint or a data
error, each user of the batch is tried on their own, and a failure learns the offending columns from the
error (the NOT NULL column it names, the columns of the constraint or unique index it names; any other: every
mapped column) and retries with those values dropped, until the row goes in. A dropped value is stored as
NULL, or as the user's id (text) in a NOT NULL column, kept as it was in an existing profile, recorded in
profile_sync.dropped_values and reported by a WARNING (SQLSTATE PS001, COLUMN the column, DETAIL the user id;
never the value). A constraint no mapped column is part of still fails the user, as before.
"""

from __future__ import annotations

from psycopg import sql

from profilesync.catalog import TableFacts
from profilesync.mapping import TEXT_MAX_LEN, Column, ProfileMapping, Source

_META_COLUMN = {"meta": "raw_user_meta_data", "app_meta": "raw_app_meta_data"}
_META_ALIAS = {"meta": "m", "app_meta": "a"}  # their coalesced values in sync_profiles' target


def _sql(template: str, **parts: sql.Composable) -> sql.Composed:
    """A SQL template with {placeholders} filled by composables (identifiers and literals quoted)."""
    return sql.SQL(template).format(**parts)  # our own templates only


def _join(separator: str, parts: list[sql.Composable]) -> sql.Composed:
    return sql.SQL(separator).join(parts)


_META_ALIASES = {kind: sql.SQL(f"t.{alias}") for kind, alias in _META_ALIAS.items()}


def source_value(source: Source, column: Column) -> sql.Composed:
    """The cleaned value of one source for one column, over the row `t` of sync_profiles' target."""
    if source.key is None:  # email, phone: auth.users' own columns, trimmed
        return _sql("nullif(pg_catalog.btrim({col}), '')", col=sql.Identifier("t", source.kind))
    value = _sql("{meta} -> {key}", meta=_META_ALIASES[source.kind], key=sql.Literal(source.key))
    if column.is_url:
        return _sql("profile_sync.clean_url({value})", value=value)
    return _sql("profile_sync.clean_text({value}, {cap})", value=value, cap=sql.Literal(TEXT_MAX_LEN))


def column_value(column: Column) -> sql.Composed:
    """The column's value: its first non-empty source."""
    values: list[sql.Composable] = [source_value(source, column) for source in column.sources]
    if len(values) == 1:
        return sql.Composed(values)
    return _sql("coalesce(\n        {values})", values=_join(",\n        ", values))


def _not_null(mapping: ProfileMapping, facts: TableFacts) -> set[str]:
    return {c.name for c in mapping.columns if (found := facts.column(c.name)) is not None and found.not_null}


_SYNC = """WITH target AS (
    SELECT u.id, u.deleted_at IS NOT NULL AS soft_deleted, u.email, u.phone,
           coalesce(u.raw_user_meta_data, '{{}}'::jsonb) AS m,
           coalesce(u.raw_app_meta_data, '{{}}'::jsonb) AS a
    FROM auth.users u
    WHERE u.id = ANY (ids)
    FOR SHARE OF u
  ), live AS (
    SELECT
      {live}
    FROM target t
    WHERE NOT t.soft_deleted
  ), existing AS (
    SELECT p.{key} AS id FROM {table} p WHERE p.{key} = ANY (ids)
  ), upserted AS (
    INSERT INTO {table} AS p ({insert_columns})
    SELECT {insert_values}
    FROM live l
    {conflict}
    RETURNING p.{key} AS id
  ), scrubbed_rows AS (
    {scrub}
  ), retired AS (
    DELETE FROM profile_sync.signup_events e WHERE e.user_id = ANY (ids)
  )
  SELECT
    (SELECT count(*)::integer FROM upserted x WHERE x.id NOT IN (SELECT ex.id FROM existing ex)),
    (SELECT count(*)::integer FROM upserted x WHERE x.id IN (SELECT ex.id FROM existing ex)),
    (SELECT count(*)::integer FROM scrubbed_rows),
    (SELECT count(DISTINCT x)::integer FROM pg_catalog.unnest(ids) x)
      - (SELECT count(*)::integer FROM live)"""


def sync_statement(mapping: ProfileMapping, facts: TableFacts) -> sql.Composed:
    """One statement bringing the profiles of the plpgsql variable `ids` in step with auth.users, under
    `metadata_policy`, with the columns named in `dropped` left out; selects (created, updated, scrubbed,
    missing).

    One snapshot: the events it deletes are exactly those committed before the users it read, and a change
    committed meanwhile keeps its event for the next job. The users are read FOR SHARE, which conflicts with
    every UPDATE of the row (FOR KEY SHARE would let a soft delete that changes no key column through): a soft
    delete in flight is waited for and then seen (nothing is copied), one arriving later waits for this
    transaction, so data is only copied from a row that stays live until the copy commits and the scrub that
    retires a soft delete's event sees every profile copied before it. The same lock keeps the foreign key
    safe: a hard delete either finished first (the user is missing) or waits for this transaction (and then
    cascades), so the foreign key never fails a batch (23503). ON CONFLICT DO UPDATE, not a separate UPDATE:
    it also catches a profile another path committed after this statement's snapshot.
    """
    table = sql.Identifier(mapping.schema, mapping.table)
    key = sql.Identifier(facts.user_key or "id")
    not_null = _not_null(mapping, facts)
    stamp = facts.column("updated_at")
    touch: list[sql.Composable] = (
        [sql.SQL("updated_at = pg_catalog.now()")]
        if stamp is not None and stamp.type_name.startswith("timestamp")
        else []
    )
    columns = mapping.columns

    def name(column: Column) -> sql.Identifier:
        return sql.Identifier(column.name)

    def is_dropped(column: Column) -> sql.Composed:
        return _sql("{name} = ANY (dropped)", name=sql.Literal(column.name))

    def value(column: Column) -> sql.Identifier:
        # live's columns are numbered: a mapped column may be called id, like the user's id next to it
        return sql.Identifier(f"v{columns.index(column)}")

    def inserted(column: Column) -> sql.Composed:
        fallback = sql.SQL("l.id::text" if column.name in not_null else "NULL")
        return _sql(
            "CASE WHEN {dropped} THEN {fallback} ELSE l.{value} END",
            dropped=is_dropped(column),
            fallback=fallback,
            value=value(column),
        )

    def updated(column: Column) -> sql.Composed:
        value = _sql("excluded.{name}", name=name(column))
        if column.follows_policy:
            value = _sql(
                "profile_sync.apply_metadata_policy(metadata_policy, p.{name}, {value})",
                name=name(column),
                value=value,
            )
        return _sql(
            "CASE WHEN {dropped} THEN p.{name} ELSE {value} END",
            dropped=is_dropped(column),
            name=name(column),
            value=value,
        )

    def scrubbed(column: Column) -> sql.Composed:
        # NOT NULL columns get the user's id, as a dropped value does
        return _sql("p.{key}::text", key=key) if column.name in not_null else sql.Composed([sql.SQL("NULL")])

    live = _join(
        ",\n      ",
        [sql.SQL("t.id"), *(_sql("{v} AS {name}", v=column_value(c), name=value(c)) for c in columns)],
    )
    insert_columns = _join(", ", [key, *(name(c) for c in columns)])
    insert_values = _join(",\n           ", [sql.SQL("l.id"), *(inserted(c) for c in columns)])
    if columns:
        conflict = _sql(
            "ON CONFLICT ({key}) DO UPDATE SET\n      {sets}\n"
            "    WHERE ({current}) IS DISTINCT FROM (\n      {wanted})",
            key=key,
            sets=_join(",\n      ", [*(_sql("{n} = {v}", n=name(c), v=updated(c)) for c in columns), *touch]),
            current=_join(", ", [_sql("p.{n}", n=name(c)) for c in columns]),
            wanted=_join(",\n      ", [updated(c) for c in columns]),
        )
        scrub = _sql(
            "UPDATE {table} p\n    SET {sets}\n    FROM target t\n"
            "    WHERE p.{key} = t.id AND t.soft_deleted\n      AND ({changed})\n    RETURNING p.{key} AS id",
            table=table,
            key=key,
            sets=_join(", ", [*(_sql("{n} = {v}", n=name(c), v=scrubbed(c)) for c in columns), *touch]),
            changed=_join(
                " OR ", [_sql("p.{n} IS DISTINCT FROM {v}", n=name(c), v=scrubbed(c)) for c in columns]
            ),
        )
    else:  # a profile of the id alone: nothing to update or scrub
        conflict = _sql("ON CONFLICT ({key}) DO NOTHING", key=key)
        scrub = _sql("SELECT p.{key} AS id FROM {table} p WHERE false", key=key, table=table)
    return _sql(
        _SYNC,
        live=live,
        key=key,
        table=table,
        insert_columns=insert_columns,
        insert_values=insert_values,
        conflict=conflict,
        scrub=scrub,
    )


_FUNCTION = """CREATE OR REPLACE FUNCTION profile_sync.sync_profiles(
  user_ids uuid[], metadata_policy text DEFAULT 'fill-null'
)
RETURNS TABLE (created integer, updated integer, scrubbed integer, missing integer)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $fn$
#variable_conflict use_variable
DECLARE
  ids uuid[] := user_ids;
  dropped text[] := '{{}}';
  learned text[];
  one uuid;
  n_created integer;
  n_updated integer;
  n_scrubbed integer;
  n_missing integer;
  total integer[] := ARRAY[0, 0, 0, 0];
  failed_state text;
  failed_constraint text;
  failed_column text;
BEGIN
  IF metadata_policy IS NULL OR metadata_policy NOT IN ('fill-null', 'overwrite', 'off') THEN
    RAISE EXCEPTION 'profile_sync: unknown metadata policy %', pg_catalog.quote_literal(metadata_policy)
      USING ERRCODE = 'invalid_parameter_value', HINT = 'fill-null, overwrite or off';
  END IF;

  -- The fast path: the whole batch in one statement.
  BEGIN
    {statement}
    INTO n_created, n_updated, n_scrubbed, n_missing;
    RETURN QUERY SELECT n_created, n_updated, n_scrubbed, n_missing;
    RETURN;
  EXCEPTION WHEN integrity_constraint_violation OR data_exception THEN
    NULL;  -- a value the table's constraints reject: user by user below
  END;

  -- User by user, earliest signup first (for a unique value: the first to sign up keeps it), each retried
  -- without the values its errors point at until its row goes in.
  FOREACH one IN ARRAY (
    SELECT coalesce(pg_catalog.array_agg(x.id ORDER BY u.created_at, x.id), '{{}}')
    FROM (SELECT DISTINCT i.id FROM pg_catalog.unnest(user_ids) AS i(id)) x
    LEFT JOIN auth.users u ON u.id = x.id
  ) LOOP
    ids := ARRAY[one];
    dropped := '{{}}';
    LOOP
      BEGIN
        {statement}
        INTO n_created, n_updated, n_scrubbed, n_missing;
        EXIT;
      EXCEPTION WHEN integrity_constraint_violation OR data_exception THEN
        GET STACKED DIAGNOSTICS failed_state = RETURNED_SQLSTATE,
                                failed_constraint = CONSTRAINT_NAME,
                                failed_column = COLUMN_NAME;
        learned := ARRAY(
          SELECT c FROM pg_catalog.unnest(profile_sync.rejected_columns(
            {table}::regclass, failed_constraint, failed_column, {mapped})) c
          WHERE c <> ALL (dropped));
        IF pg_catalog.cardinality(learned) = 0 THEN
          RAISE;  -- no mapped value is the cause: the user fails, as on any other error
        END IF;
        dropped := dropped || learned;
        PERFORM profile_sync.report_dropped(
          one, learned, coalesce(nullif(failed_constraint, ''), failed_state));
      END;
    END LOOP;
    total := ARRAY[total[1] + n_created, total[2] + n_updated, total[3] + n_scrubbed, total[4] + n_missing];
  END LOOP;
  RETURN QUERY SELECT total[1], total[2], total[3], total[4];
END
$fn$;
"""


def sync_profiles(mapping: ProfileMapping, facts: TableFacts) -> str:
    """CREATE OR REPLACE FUNCTION profile_sync.sync_profiles(user_ids, metadata_policy) for this mapping."""
    statement = sync_statement(mapping, facts)
    return _sql(
        _FUNCTION,
        statement=statement,
        table=sql.Literal(sql.Identifier(mapping.schema, mapping.table).as_string()),
        mapped=_sql(
            "ARRAY[{names}]::text[]", names=_join(", ", [sql.Literal(c.name) for c in mapping.columns])
        ),
    ).as_string()


def update_trigger(mapping: ProfileMapping) -> str:
    """The AFTER UPDATE trigger on auth.users: only the columns the profile is made of (the mapped sources;
    deleted_at for the scrub) or that mark a conversion (email, phone, is_anonymous). Its WHEN compares the
    mapped metadata keys, so an UPDATE that rewrites the metadata without changing what the profile uses
    (the confirmation's "email_verified") records no event."""
    kinds = {source.kind for source in mapping.metadata_keys}
    watched = ["email", "phone", *(_META_COLUMN[k] for k in ("meta", "app_meta") if k in kinds)]
    watched += ["is_anonymous", "deleted_at"]
    conditions: list[sql.Composable] = [
        _sql("OLD.{c} IS DISTINCT FROM NEW.{c}", c=sql.Identifier(c))
        for c in ("email", "phone", "is_anonymous", "deleted_at")
    ]
    for kind, column in _META_COLUMN.items():
        keys = [sql.Literal(s.key) for s in mapping.metadata_keys if s.kind == kind and s.key is not None]
        if not keys:
            continue
        col = sql.Identifier(column)
        conditions.append(
            _sql(
                "(OLD.{col} IS DISTINCT FROM NEW.{col}\n"
                "            AND ROW({old})\n                IS DISTINCT FROM\n                ROW({new}))",
                col=col,
                old=_join(", ", [_sql("OLD.{col} -> {k}", col=col, k=k) for k in keys]),
                new=_join(", ", [_sql("NEW.{col} -> {k}", col=col, k=k) for k in keys]),
            )
        )
    return _sql(
        "CREATE OR REPLACE TRIGGER profile_sync_on_auth_user_updated\n"
        "  AFTER UPDATE OF {watched} ON auth.users\n"
        "  FOR EACH ROW\n"
        "  WHEN ({conditions})\n"
        "  EXECUTE FUNCTION profile_sync.on_auth_user_updated();\n",
        watched=_join(", ", [sql.Identifier(c) for c in watched]),
        conditions=_join("\n        OR ", conditions),
    ).as_string()


def render(mapping: ProfileMapping, facts: TableFacts) -> str:
    """Every mapping-dependent definition, in the order they are applied."""
    return sync_profiles(mapping, facts) + "\n" + update_trigger(mapping)
