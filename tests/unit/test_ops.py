"""Pure parts of the operator commands: the demo's verdict, progress, reports, replay, CLI."""

from __future__ import annotations

import io
from importlib.metadata import version

import fakeredis
import pytest
from rq.registry import FailedJobRegistry

from profilesync import cli
from profilesync.devkit.demo import Outcome, Snapshot, format_progress, format_summary, problems
from profilesync.ops.backfill import VerificationReport, format_report
from profilesync.ops.progress import StatusLine, bar
from profilesync.ops.replay import format_result, replay
from profilesync.queueing import CREATE_PROFILES, profiles_queue

COMPLETE = VerificationReport(
    users=3, profiles=3, users_without_profiles=0, pending_events=0, failed_events=0
)

# -- demo verdict and output ---------------------------------------------------------------------------------


def passing_outcome() -> Outcome:
    return Outcome(
        target=3,
        signups=3,
        chats=3,
        conversations=3,
        signup_ms=[0.5, 0.6, 0.7],
        chat_ms=[2.0, 3.0, 4.0],
        profile_ms=[1.0, 2.0, 3.0],
        load_seconds=1.5,
        total_seconds=4.0,
        process_exit_codes={"publisher": 0, "worker-1": 0},
    )


def test_a_complete_run_passes() -> None:
    assert problems(passing_outcome(), COMPLETE) == []
    summary = format_summary(passing_outcome(), COMPLETE)
    assert summary.endswith("demo PASSED")
    assert "signup → profile        p50 2.0 ms  p99 3.0 ms  max 3.0 ms" in summary
    assert "(2/s over 1.5s)" in summary


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"signups": 2, "conversations": 2, "signup_errors": {"OperationalError": 1}}, "only 2 of 3 signups"),
        ({"chat_errors": {"ProfileNotReadyError": 1}}, "1 chat insert(s) failed: ProfileNotReadyError x1"),
        ({"conversations": 2}, "2 conversations for 3 signups"),
        ({"failed_jobs": 1}, "1 failed job(s)"),
        ({"process_exit_codes": {"publisher": 0, "worker-1": None}}, "did not stop cleanly"),
    ],
)
def test_each_shortfall_fails_the_demo(change: dict[str, object], expected: str) -> None:
    outcome = passing_outcome()
    for name, value in change.items():
        setattr(outcome, name, value)
    found = problems(outcome, COMPLETE)
    assert len(found) == 1 and expected in found[0]
    assert "demo FAILED" in format_summary(outcome, COMPLETE)


def test_a_user_without_profile_fails_the_demo() -> None:
    report = VerificationReport(3, 2, 1, 1, 0, ["u-1"])
    assert problems(passing_outcome(), report) == ["not every user has exactly one profile (see the report)"]


def test_progress_line() -> None:
    line = format_progress(Snapshot(2.5, 40, 100, 38, 2, 1.25, 7.0, 37, 0))
    assert line == (
        "  2.5s  signups 40/100  profiles 38  queue 2  latency p50 1.2 ms p99 7.0 ms  chats 37  failed 0"
    )
    assert "latency p50 - p99 -" in format_progress(Snapshot(0.1, 0, 100, 0, 0, None, None, 0, 0))


# -- verification report ---------------------------------------------------------------------------------


def test_verification_report_lists_a_sample_of_users_without_profiles() -> None:
    report = VerificationReport(1200, 1198, 2, 2, 0, ["a", "b"])
    text = format_report(report)
    assert "users (live)                 1,200" in text
    assert "first 2 users without a profile:\n    a\n    b" in text
    assert text.endswith("result: INCOMPLETE")
    assert not report.complete and report.as_dict()["complete"] is False
    assert format_report(COMPLETE).endswith("result: OK, every user has a profile")


# -- progress ------------------------------------------------------------------------------------------------


def test_bar() -> None:
    assert bar(0, 10, width=10) == "[----------]   0%"
    assert bar(5, 10, width=10) == "[#####-----]  50%"
    assert bar(12, 10, width=10) == "[##########] 100%"
    assert bar(0, 0, width=4) == "[####] 100%"


def test_status_line_rewrites_in_place_on_a_terminal() -> None:
    stream = io.StringIO()
    line = StatusLine(stream, tty=True)
    line.update("long text")
    line.update("short")
    line.finish()
    assert stream.getvalue() == "\rlong text\rshort    \rshort\n"


def test_status_line_prints_plain_lines_at_an_interval_elsewhere() -> None:
    now = [0.0]
    stream = io.StringIO()
    line = StatusLine(stream, tty=False, plain_every=5.0, clock=lambda: now[0])
    for step, text in enumerate(["a", "b", "c", "d"]):
        now[0] = step * 2.5
        line.update(text)
    line.finish()
    assert stream.getvalue() == "a\nc\nd\n"  # at 0s and 5s, then the final state once
    line.finish("d")  # the state just printed is not repeated
    assert stream.getvalue() == "a\nc\nd\n"


# -- replay (fakeredis) --------------------------------------------------------------------------------------


def test_replay_requeues_failed_jobs_and_reports_unknown_and_expired_ids() -> None:
    connection = fakeredis.FakeRedis()
    queue = profiles_queue(connection)
    registry = FailedJobRegistry(queue=queue)
    jobs = [queue.enqueue(CREATE_PROFILES, args=([f"bad-{n}"],)) for n in range(3)]
    for job in jobs:
        queue.remove(job)
        registry.add(job, ttl=600, exc_string="boom")
    connection.delete(jobs[2].key)  # its id stays in the registry, its data is gone

    result = replay(queue, [jobs[0].id, "nope", jobs[2].id, jobs[0].id])
    assert result.requeued == [jobs[0].id]
    assert result.unknown == ["nope"]
    assert result.expired == [jobs[2].id]
    assert queue.job_ids == [jobs[0].id]
    assert registry.get_job_ids() == [jobs[1].id]
    assert format_result(result).splitlines() == [
        "requeued 1 failed job(s)",
        f"dropped 1 failed job(s) whose data expired: {jobs[2].id}",
        "not failed jobs of the profiles queue (see rq info -u $REDIS_URL): nope",
    ]

    assert replay(queue).requeued == [jobs[1].id]
    assert registry.count == 0


# -- CLI parsing ---------------------------------------------------------------------------------------------


def test_cli_knows_every_designed_subcommand() -> None:
    parser = cli.build_parser()
    for argv in (
        ["migrate", "--dev-auth-stub"],
        ["publisher"],
        ["worker", "--burst"],
        ["backfill", "--dry-run"],
        ["doctor", "--json"],
        ["replay", "--all"],
        ["replay", "job-1", "job-2"],
        ["replay", "--events"],
        ["demo", "--users", "200"],
    ):
        assert parser.parse_args(argv).command == argv[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["replay"],
        ["replay", "--all", "job-1"],
        ["doctor", "--only", "workers,bogus"],
        ["demo", "--users", "0"],
    ],
)
def test_cli_rejects_bad_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(argv)
    assert exc.value.code == 2
    capsys.readouterr()


def test_cli_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"profilesync {version('profilesync')}\n"


def test_doctor_only_takes_check_names() -> None:
    args = cli.build_parser().parse_args(["doctor", "--only", "database, workers"])
    assert args.only == {"database", "workers"}
