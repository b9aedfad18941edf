"""The profile mapping: TOML → ProfileMapping, and its fit to a table's catalog facts."""

from __future__ import annotations

from pathlib import Path

import pytest

from profilesync.catalog import SEED_FACTS, ColumnFacts, TableFacts, check
from profilesync.errors import ConfigError
from profilesync.mapping import DEFAULT, Column, Source, is_url_column, load, parse

APP = """
[profile]
table = "public.profiles"
[profile.columns]
username = ["meta.user_name", "meta.preferred_username"]
full_name = ["meta.full_name", "meta.name"]
website = ["app_meta.website"]
contact = ["email", "phone"]
"""


def test_a_config_names_table_columns_and_sources_in_order() -> None:
    mapping = parse(APP)
    assert (mapping.schema, mapping.table, mapping.is_seed) == ("public", "profiles", False)
    assert [c.name for c in mapping.columns] == ["username", "full_name", "website", "contact"]
    assert mapping.columns[0].sources == (Source("meta", "user_name"), Source("meta", "preferred_username"))
    assert mapping.columns[3].sources == (Source("email"), Source("phone"))
    assert [str(s) for s in mapping.metadata_keys] == [
        "meta.user_name",
        "meta.preferred_username",
        "meta.full_name",
        "meta.name",
        "app_meta.website",
    ]
    assert mapping.auth_columns == ("email", "phone")
    assert mapping.columns[2].is_url and not mapping.columns[0].is_url
    assert not mapping.columns[3].follows_policy and mapping.columns[0].follows_policy


def test_no_config_is_the_seed_mapping(tmp_path: Path) -> None:
    assert load(None) is DEFAULT
    assert DEFAULT.is_seed and DEFAULT.qualified == "public.user_profiles"
    seed = tmp_path / "seed.toml"
    seed.write_text(
        '[profile]\ntable = "public.user_profiles"\n[profile.columns]\nemail = ["email"]\n'
        'full_name = ["meta.full_name", "meta.name", "meta.user_name", "meta.preferred_username"]\n'
        'avatar_url = ["meta.avatar_url", "meta.picture"]\n'
    )
    assert load(seed) == DEFAULT


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("avatar_url", True),
        ("Photo_URL", True),
        ("redirect_uri", True),
        ("website", True),
        ("avatar", True),
        ("username", False),
        ("urls_seen", False),
        ("full_name", False),
    ],
)
def test_url_columns_by_name(name: str, url: bool) -> None:
    assert is_url_column(name) is url


T = '[profile]\ntable = "a.b"\n[profile.columns]\n'


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[profile\n", "PROFILESYNC_CONFIG: not valid TOML"),
        ('[other]\nx = 1\n[profile]\ntable = "a.b"\n', "other: unknown section"),
        ("x = 1\n", "x: unknown section"),
        ("[profile.columns]\n", "profile.table: must be"),
        ('[profile]\ntable = "profiles"\n', "profile.table: must be"),
        ('[profile]\ntable = "a.b.c"\n', "profile.table: must be"),
        ('[profile]\ntable = ".b"\n', "profile.table: not a schema name"),
        ('[profile]\ntable = "a.b"\ncolums = {}\n', "profile.colums: unknown key"),
        ('[profile]\ntable = "a.b"\ncolumns = 3\n', "profile.columns: must be"),
        (T + 'x = "meta.a"\n', "profile.columns.x: must be a non-empty"),
        (T + "x = []\n", "profile.columns.x: must be a non-empty"),
        (T + 'x = ["mail"]\n', "profile.columns.x: source 'mail'"),
        (T + 'x = ["meta."]\n', "profile.columns.x: source 'meta.'"),
        (T + 'x = ["meta.a\'b"]\n', "profile.columns.x: source"),
        (T + 'x = ["email", "email"]\n', "listed twice"),
        (T + 'home_url = ["email"]\n', "profile.columns.home_url: a URL"),
        (T + '"a.b" = ["email"]\n', "profile.columns.a.b: not a column"),
    ],
)
def test_a_bad_config_is_one_line_naming_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    assert key in str(caught.value)
    assert "\n" not in str(caught.value)


def test_an_unreadable_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PROFILESYNC_CONFIG: cannot read"):
        load(tmp_path / "absent.toml")


def _column(name: str, *, textual: bool = True, not_null: bool = False, default: bool = False) -> ColumnFacts:
    return ColumnFacts(name, "text" if textual else "integer", textual, not_null, default, False)


PROFILES = TableFacts(
    columns=(
        ColumnFacts("user_id", "uuid", False, True, False, False),
        _column("username"),
        _column("full_name"),
        _column("website"),
        _column("contact"),
        _column("score", textual=False, not_null=True, default=True),
    ),
    primary_key=("user_id",),
    user_key="user_id",
    cascades=False,
)


def test_a_fitting_table_has_no_problems() -> None:
    assert check(parse(APP), PROFILES) == []
    assert check(DEFAULT, SEED_FACTS) == []
    assert check(DEFAULT, None) == []  # migrate creates the seed's table


def test_problems_name_the_key() -> None:
    mapping = parse(APP.replace('contact = ["email", "phone"]', 'contact = ["email"]\nscore = ["meta.s"]'))
    facts = TableFacts(
        columns=(
            *PROFILES.columns[:4],
            _column("score", textual=False),
            _column("bio", not_null=True),
            _column("created", not_null=True, default=True),
        ),
        primary_key=("user_id",),
        user_key=None,
        cascades=False,
    )
    assert check(mapping, facts) == [
        "profile.table: the primary key of public.profiles must be one uuid column referencing "
        "auth.users (id)",
        "profile.columns.contact: public.profiles has no column contact",
        "profile.columns.score: score is integer; only text-like columns are mapped",
        "profile.columns.bio: public.profiles.bio is NOT NULL without a default and no source fills it",
    ]
    assert check(mapping, None) == [
        "profile.table: public.profiles does not exist (create it first, then migrate)"
    ]
    keyed = parse('[profile]\ntable = "public.profiles"\n[profile.columns]\nuser_id = ["email"]\n')
    assert check(keyed, PROFILES) == [
        "profile.columns.user_id: the primary key is the user's id, not a mapped value"
    ]


def test_mapped_columns_know_their_policy() -> None:
    assert [c.follows_policy for c in DEFAULT.columns] == [False, True, True]
    assert Column("x", (Source("phone"),)).follows_policy is False
