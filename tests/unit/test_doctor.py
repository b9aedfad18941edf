"""Doctor's pure half: facts → checks → table / JSON."""

from __future__ import annotations

import json

import pytest

from profilesync.config import Settings
from profilesync.definitions import Guards
from profilesync.ops.doctor import (
    DEFAULT_CHECKS,
    Check,
    Facts,
    Snapshot,
    Thresholds,
    evaluate,
    format_json,
    format_table,
    gather,
    healthy,
)

LIMITS = Thresholds(min_workers=1, max_failed=0, max_backlog_age=60.0)


def healthy_facts(**changes: object) -> Facts:
    facts = Facts(
        listen_url="postgresql://app:pw@db.example.com:5432/postgres",
        pending_migrations=[],
        trigger_enabled="O",
        missing_objects=[],
        outdated_definitions=[],
        drifted_objects=[],
        guards=Guards(["public.chat_conversations.user_id"], [], 0),
        profile_delete_rule="c",
        maxmemory_policy="noeviction",
        workers=2,
        failed_jobs=0,
        pending_events=3,
        oldest_event_age=0.4,
        failed_events=0,
        users_without_profiles=3,
        unrecorded_users=0,
        deleted_users_data=1,
        deleted_users_unscrubbed=0,
        live_publishers=1,
        oldest_unclaimed_age=0.2,
        oldest_snapshot=Snapshot(4242, "psql", "active", 2.0, 12),
    )
    for name, value in changes.items():
        setattr(facts, name, value)
    return facts


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_a_healthy_system_passes_every_check() -> None:
    checks = evaluate(healthy_facts(), LIMITS)
    assert [c.name for c in checks] == list(DEFAULT_CHECKS)
    assert {c.status for c in checks} == {"ok"}
    assert healthy(checks)
    assert by_name(checks)["backlog"].detail == "3 pending, oldest 0.4s"
    assert by_name(checks)["deleted_users_data"].detail == "1 being scrubbed"
    assert (
        by_name(checks)["listen_url"].detail
        == "postgresql://app:***@db.example.com:5432/postgres (direct or session mode)"
    )


@pytest.mark.parametrize(
    ("changes", "check", "detail"),
    [
        (
            {"pending_migrations": ["0003_readiness"]},
            "migrations",
            "pending: 0003_readiness (run profilesync migrate)",
        ),
        (
            {"trigger_enabled": "D"},
            "trigger",
            "profile_sync_on_auth_user_created disabled: signups are not recorded",
        ),
        (
            {"trigger_enabled": ""},
            "trigger",
            "profile_sync_on_auth_user_created missing: signups are not recorded",
        ),
        ({"trigger_enabled": "R"}, "trigger", "replica mode only"),
        (
            {"missing_objects": ["function profile_sync.create_profiles(uuid[])"]},
            "objects",
            "missing: function profile_sync.create_profiles(uuid[]) (run profilesync migrate",
        ),
        (
            {"missing_objects": [f"grant {n}" for n in range(7)]},
            "objects",
            "missing: grant 0; grant 1; grant 2; grant 3; grant 4; and 2 more",
        ),
        (
            {"outdated_definitions": ["02_profiles", "09_grants"]},
            "definitions",
            "not applied: 02_profiles, 09_grants (run profilesync migrate)",
        ),
        (
            {"drifted_objects": ["function profile_sync.clean_url(jsonb) changed"]},
            "definitions",
            "drifted from its definition: function profile_sync.clean_url(jsonb) changed (run profilesync",
        ),
        (
            {"guards": Guards(["app.posts.author_id", "public.notes.owner"], ["app.posts.author_id"], 0)},
            "guards",
            "not guarded: app.posts.author_id: a client's insert right after signup can fail with 23503 (run "
            "profilesync migrate)",
        ),
        ({"guards": None}, "guards", "the guards' functions are missing (run profilesync migrate)"),
        (
            {"listen_url": "postgresql://u:pw@pooler.supabase.com:6543/postgres"},
            "listen_url",
            "transaction pooler",
        ),
        (
            {"maxmemory_policy": "allkeys-lru"},
            "redis_policy",
            "maxmemory-policy allkeys-lru: Redis may evict",
        ),
        (
            {"redis_write_refused": "command not allowed when used memory > 'maxmemory'."},
            "redis_writes",
            "refuses writes (command not allowed when used memory > 'maxmemory'.): no job can be enqueued "
            "(maxmemory reached: raise maxmemory or free memory)",
        ),
        (
            {"redis_write_refused": "You can't write against a read only replica."},
            "redis_writes",
            "(point REDIS_URL at a writable primary)",
        ),
        ({"workers": 0}, "workers", "0 alive, expected at least 1"),
        ({"failed_jobs": 2}, "failed_jobs", "2 failed (see profilesync failed"),
        ({"oldest_event_age": 61.0}, "backlog", "3 pending, oldest 61.0s > 60s"),
        ({"failed_events": 1}, "failed_events", "1 signup events failed permanently"),
        (
            {"unrecorded_users": 2},
            "users_without_profiles",
            "2 of 3 users without a profile have no signup event",
        ),
        (
            {"deleted_users_data": 3, "deleted_users_unscrubbed": 2},
            "deleted_users_data",
            "2 profile(s) of soft-deleted users still hold personal data and no scrub is pending (run "
            "profilesync backfill;",
        ),
        ({"live_publishers": 0}, "publishers", "none alive: signups wait (start profilesync publisher)"),
        ({"live_publishers": None}, "publishers", "none alive"),
        ({"oldest_unclaimed_age": 5.5}, "publishers", "1 alive, but an event waits 5.5s > 5s to be claimed"),
    ],
)
def test_each_problem_fails_its_check_only(changes: dict[str, object], check: str, detail: str) -> None:
    checks = by_name(evaluate(healthy_facts(**changes), LIMITS))
    assert checks[check].status == "fail"
    assert detail in checks[check].detail
    assert [c.name for c in checks.values() if c.status != "ok"] == [check]
    assert not healthy(list(checks.values()))


def test_always_firing_trigger_is_fine() -> None:
    assert by_name(evaluate(healthy_facts(trigger_enabled="A"), LIMITS))["trigger"].status == "ok"


def test_thresholds_come_from_settings() -> None:
    limits = Thresholds.from_settings(
        Settings(doctor_min_workers=0, doctor_max_failed_jobs=5, doctor_max_backlog_age=600)
    )
    assert limits == Thresholds(
        min_workers=0, max_failed=5, max_backlog_age=600, safety_interval=5.0, max_snapshot_age=300.0
    )
    checks = evaluate(
        healthy_facts(workers=0, failed_jobs=5, failed_events=5, oldest_event_age=599.0), limits
    )
    assert healthy(checks)


def test_an_unreadable_redis_policy_is_a_warning_not_a_failure() -> None:
    checks = evaluate(healthy_facts(maxmemory_policy=None), LIMITS)
    assert by_name(checks)["redis_policy"].status == "warn"
    assert healthy(checks)
    assert "WARN  redis_policy" in format_table(checks)
    assert format_table(checks).endswith("\nhealthy")


@pytest.mark.parametrize(
    ("rule", "detail"),
    [
        ("a", "public.user_profiles references auth.users without ON DELETE CASCADE: deleting a user"),
        ("", "public.user_profiles has no foreign key to auth.users"),
    ],
)
def test_a_profile_key_without_on_delete_cascade_is_advice_not_a_failure(rule: str, detail: str) -> None:
    checks = evaluate(healthy_facts(profile_delete_rule=rule), LIMITS)
    assert by_name(checks)["delete_cascade"].status == "warn"
    assert by_name(checks)["delete_cascade"].detail.startswith(detail)
    assert healthy(checks)


def test_a_snapshot_held_too_long_is_a_warning_naming_its_backend() -> None:
    held = Snapshot(4242, "report-job", "idle in transaction", 301.0, 64_000)
    checks = evaluate(healthy_facts(oldest_snapshot=held), LIMITS)
    snapshot = by_name(checks)["snapshots"]
    assert snapshot.status == "warn"
    assert snapshot.detail.startswith("pid 4242 (report-job, idle in transaction) holds a snapshot for 301s")
    assert "64,000 transactions old" in snapshot.detail
    assert healthy(checks)
    assert by_name(evaluate(healthy_facts(oldest_snapshot=None), LIMITS))["snapshots"].status == "ok"


def test_unreachable_servers_fail_their_checks_and_the_checks_that_depend_on_them() -> None:
    facts = Facts(
        listen_url="postgresql://localhost:5432/postgres",
        errors={"database": "unreachable: connection refused", "redis": "unreachable: timeout"},
    )
    checks = by_name(evaluate(facts, LIMITS))
    assert checks["database"] == Check("database", "fail", "unreachable: connection refused")
    assert checks["redis"] == Check("redis", "fail", "unreachable: timeout")
    for name in (
        "migrations",
        "trigger",
        "backlog",
        "failed_events",
        "users_without_profiles",
        "deleted_users_data",
        "publishers",
        "snapshots",
    ):
        assert checks[name].detail == "not checked: database unreachable"
    for name in ("redis_policy", "redis_writes", "workers", "failed_jobs"):
        assert checks[name].detail == "not checked: Redis unreachable"
    assert checks["listen_url"].status == "ok"  # judged from the URL alone


def test_a_fact_that_could_not_be_read_fails_its_check() -> None:
    facts = healthy_facts()
    facts.errors["backlog"] = 'could not read: relation "profile_sync.signup_events" does not exist'
    checks = by_name(evaluate(facts, LIMITS))
    assert checks["backlog"].status == "fail" and "does not exist" in checks["backlog"].detail


def test_table_and_json_output() -> None:
    checks = evaluate(healthy_facts(workers=0), LIMITS)
    table = format_table(checks)
    assert "FAIL  workers " in table
    assert "OK    database " in table
    assert table.endswith("\n1 problem(s)")
    data = json.loads(format_json(checks))
    assert data["healthy"] is False
    assert data["checks"][0] == {"name": "database", "status": "ok", "detail": "reachable"}
    assert len(data["checks"]) == len(DEFAULT_CHECKS)


def test_publishers_may_be_optional() -> None:
    optional = Thresholds(min_publishers=0)
    checks = by_name(evaluate(healthy_facts(live_publishers=0, oldest_unclaimed_age=99.0), optional))
    assert checks["publishers"] == Check("publishers", "ok", "0 alive")
    two = by_name(evaluate(healthy_facts(), Thresholds(min_publishers=2)))["publishers"]
    assert two == Check("publishers", "fail", "1 alive, expected at least 2")


def test_only_the_selected_checks_are_gathered_and_shown() -> None:
    nowhere = Settings(
        database_url="postgresql://u@127.0.0.1:9/none", redis_url="redis://127.0.0.1:9/0", doctor_timeout=1
    )
    facts = gather(nowhere, ["listen_url"])  # judged from the URL alone: no server is contacted
    assert facts.errors == {}
    checks = evaluate(facts, LIMITS, ["listen_url"])
    assert [c.name for c in checks] == ["listen_url"] and healthy(checks)
    assert [c.name for c in evaluate(healthy_facts(), LIMITS, {"workers", "database"})] == [
        "database",
        "workers",
    ]
