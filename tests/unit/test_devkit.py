"""The devkit's pure parts shared by the demo, the tests and the benchmark: simulated signups, percentiles."""

from __future__ import annotations

import random
import uuid
from collections import Counter

import pytest

from profilesync.devkit.signups import KIND_WEIGHTS, make_signup, mixed_kinds
from profilesync.devkit.stats import percentile

# -- percentiles ---------------------------------------------------------------------------------------------


def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 3.0
    assert percentile(values, 100) == 5.0
    assert percentile(values, 25) == 2.0
    assert percentile([1.0, 2.0], 50) == 1.5
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile(list(map(float, range(1, 101))), 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0


def test_percentile_rejects_nothing_and_out_of_range() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


# -- simulated signups -------------------------------------------------------------------------------------


def test_mixed_kinds_has_every_kind_in_proportion_and_is_reproducible() -> None:
    kinds = mixed_kinds(10_000, random.Random(7))
    assert kinds == mixed_kinds(10_000, random.Random(7))
    share = Counter(kinds)
    total = sum(KIND_WEIGHTS.values())
    for kind, weight in KIND_WEIGHTS.items():
        assert abs(share[kind] / 10_000 - weight / total) < 0.02
    assert set(mixed_kinds(6, random.Random(1))) == set(KIND_WEIGHTS)
    assert len(mixed_kinds(3, random.Random(1))) == 3
    assert mixed_kinds(0, random.Random(1)) == []


def test_signups_look_like_supabase_auth_rows() -> None:
    user_id = uuid.UUID("12345678-1234-5678-1234-567812345678")
    email = make_signup("email", user_id)
    assert email.email == "user-12345678@example.com" and email.user_meta["email"] == email.email
    phone = make_signup("phone", user_id)
    assert phone.email is None and phone.phone is not None and phone.phone.startswith("1555")
    anonymous = make_signup("anonymous", user_id)
    assert anonymous.is_anonymous and anonymous.email is None and anonymous.user_meta == {}
    google = make_signup("google", user_id)
    assert google.user_meta["full_name"] and google.user_meta["picture"].startswith("https://")
    github = make_signup("github", user_id)
    assert github.user_meta["user_name"] == "octo-12345678" and "full_name" not in github.user_meta
    sso = make_signup("sso", user_id)
    assert sso.is_sso_user and sso.user_meta["name"]
    with pytest.raises(ValueError):
        make_signup("carrier-pigeon", user_id)
