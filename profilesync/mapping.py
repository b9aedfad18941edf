"""The profile mapping: which table holds a user's profile and which auth.users values fill its columns.

Read from the TOML file PROFILESYNC_CONFIG names; without one, the seed's own table and mapping (DEFAULT), so
an install without a config makes exactly the profiles it always made:

    [profile]
    table = "public.profiles"         # schema-qualified, as the catalog spells it
    [profile.columns]                  # profile column = sources; the first non-empty one wins
    username   = ["meta.user_name", "meta.preferred_username"]
    avatar_url = ["meta.avatar_url", "meta.picture"]

Sources: `email` and `phone` (auth.users columns), `meta.KEY` (raw_user_meta_data) and `app_meta.KEY`
(raw_app_meta_data). How a value is cleaned depends on the column (is_url_column): a URL column keeps only
public http(s) URLs (profile_sync.clean_url), any other column display text of at most 200 characters
(profile_sync.clean_text); email and phone are trimmed.

Pure: parsing and the checks that need no database. What needs the catalog (does the table exist, is the
column NOT NULL) is profilesync.catalog's.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from profilesync.errors import ConfigError

SourceKind = Literal["email", "phone", "meta", "app_meta"]

# Names as the catalog spells them (rendered quoted, so case and odd characters are kept, never interpreted).
_NAME = re.compile(r"^[^\x00-\x1f.\"]{1,63}$")
# A metadata key: what GoTrue and the OAuth providers write (user_name, avatar_url, custom:claim, …).
_KEY = re.compile(r"^[A-Za-z0-9_:-]{1,100}$")

# URL columns (cleaned as URLs): a name ending in _url or _uri, or one of these names (compared lowercased).
URL_SUFFIXES = ("_url", "_uri")
URL_NAMES = frozenset({"url", "uri", "website", "homepage", "avatar", "picture", "photo", "image"})

# The longest display text a column gets from the metadata (profile_sync.clean_text's cap).
TEXT_MAX_LEN = 200


def is_url_column(name: str) -> bool:
    """True for a column cleaned as a URL: `*_url`, `*_uri`, or one of URL_NAMES (case-insensitive)."""
    lowered = name.lower()
    return lowered.endswith(URL_SUFFIXES) or lowered in URL_NAMES


@dataclass(frozen=True)
class Source:
    kind: SourceKind
    key: str | None = None  # the metadata key of meta / app_meta

    @property
    def from_metadata(self) -> bool:
        return self.kind in ("meta", "app_meta")

    def __str__(self) -> str:
        return f"{self.kind}.{self.key}" if self.key is not None else self.kind


@dataclass(frozen=True)
class Column:
    name: str
    sources: tuple[Source, ...]

    @property
    def is_url(self) -> bool:
        return is_url_column(self.name)

    @property
    def follows_policy(self) -> bool:
        """Fed by the metadata: an existing profile's value follows PROFILESYNC_METADATA_POLICY. A column fed
        only by email/phone always follows auth.users."""
        return any(source.from_metadata for source in self.sources)


@dataclass(frozen=True)
class ProfileMapping:
    schema: str
    table: str
    columns: tuple[Column, ...]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def is_seed(self) -> bool:
        """The seed's table: migrate creates it (and the seed's conversations table) when absent."""
        return (self.schema, self.table) == (DEFAULT.schema, DEFAULT.table)

    @property
    def metadata_keys(self) -> tuple[Source, ...]:
        """Every metadata source, once each, in mapping order (the update trigger compares them)."""
        seen: dict[Source, None] = {}
        for column in self.columns:
            for source in column.sources:
                if source.from_metadata:
                    seen.setdefault(source, None)
        return tuple(seen)

    @property
    def auth_columns(self) -> tuple[str, ...]:
        """The auth.users columns (email, phone) some profile column reads."""
        kinds = {source.kind for column in self.columns for source in column.sources}
        return tuple(kind for kind in ("email", "phone") if kind in kinds)


def _source(text: str, key: str) -> Source:
    if text in ("email", "phone"):
        return Source(text)  # type: ignore[arg-type]  # narrowed by the membership test
    kind, dot, meta_key = text.partition(".")
    if dot and kind in ("meta", "app_meta") and _KEY.match(meta_key):
        return Source(kind, meta_key)  # type: ignore[arg-type]
    raise ConfigError(
        f"{key}: source {text!r} is not email, phone, meta.KEY or app_meta.KEY (KEY: letters, digits, _ : -)"
    )


def _name(text: object, key: str, what: str) -> str:
    if not isinstance(text, str) or not _NAME.match(text):
        raise ConfigError(f"{key}: not a {what} name (1-63 characters, no dot, quote or control character)")
    return text


def parse(text: str, origin: str = "PROFILESYNC_CONFIG") -> ProfileMapping:
    """The mapping a TOML text describes. Raises ConfigError with one line naming the offending key."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML ({exc})") from None
    unknown = sorted(set(document) - {"profile"})
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section (only [profile] is read)")
    profile = document.get("profile")
    if not isinstance(profile, dict):
        raise ConfigError('profile: missing [profile] section with table = "schema.table"')
    unknown = sorted(set(profile) - {"table", "columns"})
    if unknown:
        raise ConfigError(f"profile.{unknown[0]}: unknown key (profile has table and columns)")
    table = profile.get("table")
    if not isinstance(table, str) or table.count(".") != 1:
        raise ConfigError('profile.table: must be "schema.table", schema-qualified')
    schema_name, _, table_name = table.partition(".")
    schema_name = _name(schema_name, "profile.table", "schema")
    table_name = _name(table_name, "profile.table", "table")

    raw_columns = profile.get("columns", {})
    if not isinstance(raw_columns, dict):
        raise ConfigError("profile.columns: must be a table of column = [sources]")
    columns = []
    for name, raw_sources in raw_columns.items():
        key = f"profile.columns.{name}"
        _name(name, key, "column")
        if (
            not isinstance(raw_sources, list)
            or not raw_sources
            or not all(isinstance(s, str) for s in raw_sources)
        ):
            raise ConfigError(f'{key}: must be a non-empty list of sources, e.g. ["meta.full_name"]')
        sources = tuple(_source(s, key) for s in raw_sources)
        if len(set(sources)) != len(sources):
            raise ConfigError(f"{key}: a source is listed twice")
        column = Column(name, sources)
        if column.is_url and any(not s.from_metadata for s in sources):
            raise ConfigError(f"{key}: a URL column (by its name) is fed by meta.KEY or app_meta.KEY only")
        columns.append(column)
    return ProfileMapping(schema_name, table_name, tuple(columns))


def load(path: Path | None) -> ProfileMapping:
    """The mapping of the file at `path`, or DEFAULT when there is none configured."""
    if path is None:
        return DEFAULT
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"PROFILESYNC_CONFIG: cannot read {path} ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"PROFILESYNC_CONFIG: {path} is not UTF-8 text") from None
    return parse(text, f"PROFILESYNC_CONFIG ({path})")


DEFAULT = ProfileMapping(
    "public",
    "user_profiles",
    (
        Column("email", (Source("email"),)),
        Column(
            "full_name",
            (
                Source("meta", "full_name"),
                Source("meta", "name"),
                Source("meta", "user_name"),
                Source("meta", "preferred_username"),
            ),
        ),
        Column("avatar_url", (Source("meta", "avatar_url"), Source("meta", "picture"))),
    ),
)
