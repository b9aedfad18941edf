"""The chaos soak's pure parts: its schedule, its audit, its report."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from bench.__main__ import parse_args
from bench.chaos import audit, report, schedule
from bench.chaos.audit import RECOVERY, Facts
from bench.chaos.load import Attempt
from bench.chaos.schedule import Planned, Ran
from profilesync.devkit.faults import WORKER_KILL_BOUND

PROCESSES = ("publisher", "worker-1", "worker-2")


def _plan(seed: int = 7, duration: float = 600, interval: tuple[float, float] = (20, 40)) -> list[Planned]:
    return schedule.plan(seed, duration, interval, PROCESSES, flood=1100)


def test_the_schedule_is_a_function_of_the_seed() -> None:
    assert _plan(7) == _plan(7)
    assert _plan(7) != _plan(8)


def test_faults_come_every_interval_and_every_kind_before_any_twice() -> None:
    planned = _plan(duration=600)
    gaps = [b.at - a.at for a, b in itertools.pairwise(planned)]
    assert all(19.8 <= gap <= 40.2 for gap in gaps), gaps
    assert 20 <= planned[0].at <= 40 and planned[-1].at < 600
    assert 600 / 40 - 1 <= len(planned) <= 600 / 20
    kinds = len(schedule.KINDS)
    assert {p.kind for p in planned[:kinds]} == set(schedule.KINDS)


def test_fault_parameters_scale_with_the_interval() -> None:
    for interval, most in (((20, 40), 30), ((4, 8), 6)):
        for p in _plan(seed=3, duration=2000, interval=interval):
            if "seconds" in p.params:
                assert 0 < float(p.params["seconds"]) <= most, p
            if "process" in p.params:
                assert p.params["process"] in PROCESSES
            if p.kind == schedule.LOCK:
                assert p.params["table"] in schedule.LOCKED_TABLES
            if p.kind == schedule.FLOOD:
                assert p.params["connections"] == 1100


def test_a_bad_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="interval"):
        schedule.plan(1, 60, (5, 1), PROCESSES, 10)


def test_describe_names_the_fault_and_its_parameters() -> None:
    assert (
        Planned(3.0, schedule.LOCK, {"table": "t", "seconds": 2.5}).describe()
        == "lock_table table=t seconds=2.5"
    )


def _ran(kind: str, started: float, ended: float, **params: str | int | float) -> Ran:
    return Ran(Planned(0.0, kind, dict(params)), started, ended, "")


def test_a_user_is_due_recovery_seconds_after_the_faults_that_hit_it() -> None:
    restart = _ran(schedule.POSTGRES_RESTART, 100.0, 103.0)
    assert audit.due(50.0, [restart]) == 50.0 + RECOVERY  # it ended before the user signed up: no effect
    assert audit.due(90.0, [restart]) == 103.0 + RECOVERY  # began before the user was due
    assert audit.due(101.0, [restart]) == 103.0 + RECOVERY  # signed up during it
    lock = _ran(schedule.LOCK, 130.0, 135.0)  # begins within the extended deadline: extends it again
    assert audit.due(90.0, [restart, lock]) == 135.0 + RECOVERY
    killed = _ran(schedule.KILL, 10.0, 10.5, process="worker-1")
    assert audit.due(9.0, [killed]) == 10.5 + WORKER_KILL_BOUND
    publisher = _ran(schedule.KILL, 10.0, 10.5, process="publisher")
    assert audit.due(9.0, [publisher]) == 10.5 + RECOVERY


def _facts(**changes: object) -> Facts:
    values: dict[str, object] = {
        "users": 3,
        "soft_deleted": 1,
        "profiles": 4,
        "lost": 0,
        "duplicated": 0,
        "redundant": 2,
        "unscrubbed": 0,
        "outbox": 0,
        "waits": [(10.0, 0.01), (20.0, 0.02), (101.0, 5.0)],
    }
    values.update(changes)
    return Facts(**values)  # type: ignore[arg-type]


RAN = [_ran(schedule.POSTGRES_RESTART, 100.0, 102.0), _ran(schedule.LOCK, 130.0, 133.0)]
ATTEMPTS = [
    Attempt("a", "email", 10.0, 0.004),
    Attempt("b", "google", 101.0, 0.002, "OperationalError"),  # PostgreSQL was down: expected
    Attempt("c", "email", 131.0, 0.150),
]

CLEAN = {"publisher": 0, "worker-1": 0}


def test_a_clean_run_passes_every_check() -> None:
    checks = audit.checks(_facts(), ATTEMPTS, RAN, CLEAN)
    assert all(check.ok for check in checks), checks


@pytest.mark.parametrize(
    ("facts", "attempts", "codes", "failed"),
    [
        (
            _facts(lost=1, waits=[(10.0, 200.0)]),
            ATTEMPTS,
            CLEAN,
            {"live users without a profile", "users profiled"},
        ),
        (_facts(duplicated=2), ATTEMPTS, CLEAN, {"profiles inserted twice"}),
        (_facts(unscrubbed=1), ATTEMPTS, CLEAN, {"soft-deleted profiles holding data"}),
        (_facts(outbox=3), ATTEMPTS, CLEAN, {"signup events left in the outbox"}),
        (
            _facts(),
            [*ATTEMPTS, Attempt("d", "email", 131.0, 0.2, "QueryCanceled")],
            CLEAN,
            {"signups refused"},
        ),
        (_facts(waits=[(10.0, RECOVERY + 1)]), ATTEMPTS, CLEAN, {"users profiled"}),
        (_facts(), ATTEMPTS, {"publisher": 0, "worker-1": None}, {"processes not exiting"}),
    ],
)
def test_each_check_fails_on_its_own(
    facts: Facts, attempts: list[Attempt], codes: dict[str, int | None], failed: set[str]
) -> None:
    bad = {check.name for check in audit.checks(facts, attempts, RAN, codes) if not check.ok}
    assert {next(name for name in bad if name.startswith(prefix)) for prefix in failed} == bad


def test_figures_split_signups_into_calm_and_faulted_and_attribute_waits_to_faults() -> None:
    figures = audit.figures(_facts(), ATTEMPTS, RAN)
    assert figures["signup_latency_calm"]["n"] == 1
    assert figures["signup_latency_during_faults"]["n"] == 1
    assert figures["signup_errors"] == {"OperationalError": 1}
    assert figures["worst_wait_after_fault_s"] == [5.0, None]


def _results(ok: bool) -> dict[str, object]:
    facts = _facts() if ok else _facts(duplicated=1)
    checks = audit.checks(facts, ATTEMPTS, RAN, CLEAN)
    return {
        "meta": {
            "started": "2026-12-04 17:00 UTC",
            "command": "python -m bench --chaos 10 --seed 1",
            "options": {"minutes": 10, "seed": 1, "workers": 2, "open_files": 1024, "rate": 20.0,
                        "interval": [20.0, 40.0]},
            "cpus": 2,
            "timers": {"PROFILESYNC_JOB_TIMEOUT": "5"},
            "seconds": 650.0,
            "postgres": "15.20",
            "redis": "redis 7.0.15",
        },
        "faults": [
            {"at_s": 25.0, "fault": "lock_table", "params": {}, "took_s": 3.0, "note": "locked",
             "worst_wait_s": 3.1}
        ],
        "checks": [vars(check) for check in checks],
        "figures": {**audit.figures(facts, ATTEMPTS, RAN), "exited_on_their_own": [],
                    "exit_codes_at_stop": {}},
    }  # fmt: skip


def test_the_report_says_passed_or_failed_and_lists_checks_and_faults(tmp_path: Path) -> None:
    text = report.markdown(_results(ok=True))  # type: ignore[arg-type]
    assert "PASSED" in text and "| live users without a profile | 0 | 0 | ok |" in text
    assert "| 25.00 | lock_table | 3.00 | locked | 3.10 |" in text
    failed = _results(ok=False)
    assert not report.passed(failed)  # type: ignore[arg-type]
    assert "FAILED" in report.markdown(failed)  # type: ignore[arg-type]
    path = report.write(failed, tmp_path)  # type: ignore[arg-type]
    assert path.name == "chaos-2026-12-04-1700.md" and path.with_suffix(".json").exists()


def test_the_command_line_takes_minutes_and_a_seed() -> None:
    args = parse_args(["--chaos", "10", "--seed", "4"])
    assert (args.chaos, args.seed) == (10.0, 4)
    assert parse_args([]).chaos is None
    with pytest.raises(SystemExit):
        parse_args(["--chaos", "0"])
