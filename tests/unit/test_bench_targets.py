from typing import Any

import pytest

from bench.targets import CLIENT_GUARD_MAX_MS, IDLE_CORES_MAX, NOTIFY_WAKE_MAX_MS, targets


def _verdicts(results: dict[str, Any]) -> dict[str, tuple[float | None, bool]]:
    """metric + the target's first words -> (measured, met)."""
    return {f"{t['metric']} {t['target'][:12]}": (t["measured"], t["met"]) for t in targets(results)}


def _latency_figures(p50: float, p99: float, low_max: float = 20.0) -> dict[str, Any]:
    return {
        "ours": {
            "5": {"n": 50, "p50_ms": 3.0, "p99_ms": 9.0, "max_ms": low_max},
            "250": {"n": 2500, "p50_ms": p50, "p99_ms": p99, "max_ms": 30.0},
        }
    }


def _rates(
    ours: tuple[float, float, float], ideal: tuple[float, float, float], naive_p50: float
) -> dict[str, Any]:
    """latency at 250/s for ours, ideal and naive: (p50, p99, CPU ms per signup) each."""

    def point(p50: float, p99: float, cpu: float) -> dict[str, Any]:
        return {"n": 2500, "p50_ms": p50, "p99_ms": p99, "max_ms": 99.0, "cpu_ms_per_signup": {"total": cpu}}

    return {
        "ours": {"250": point(*ours)},
        "ideal": {"250": point(*ideal)},
        "naive": {"250": point(naive_p50, 99.0, 9.0)},
    }


@pytest.mark.parametrize(
    ("ours", "met"),
    [((2.0, 6.0, 4.0), (True, True, True)), ((2.02, 6.02, 4.02), (False, False, False))],
)
def test_latency_and_cpu_are_judged_on_ratios_to_ideal_inclusive(
    ours: tuple[float, float, float], met: tuple[bool, bool, bool]
) -> None:
    verdicts = _verdicts({"latency": _rates(ours, (1.0, 2.0, 2.0), naive_p50=3.0)})
    assert verdicts["latency p50 <= 2x id"][1] is met[0]
    assert verdicts["latency p99 <= 3x id"][1] is met[1]
    assert verdicts["CPU pipeline CPU"][1] is met[2]


def test_latency_never_slower_than_naive() -> None:
    assert _verdicts({"latency": _rates((2.0, 6.0, 4.0), (1.0, 2.0, 2.0), naive_p50=2.0)})[
        "latency p50 no slowe"
    ] == (
        1.0,
        True,
    )
    assert _verdicts({"latency": _rates((2.0, 6.0, 4.0), (1.0, 2.0, 2.0), naive_p50=1.9)})[
        "latency p50 no slowe"
    ] == (
        1.05,
        False,
    )


def test_latency_at_a_low_rate_proves_the_notify_wake_up() -> None:
    met = _verdicts({"latency": _latency_figures(1.0, 2.0, low_max=NOTIFY_WAKE_MAX_MS)})
    assert met["signup_cost still woken "] == (NOTIFY_WAKE_MAX_MS, True)
    # a signup picked up only by the 5 s safety timer shows as a multi-second slowest profile
    slow = _verdicts({"latency": _latency_figures(1.0, 2.0, low_max=4200.0)})
    assert slow["signup_cost still woken "] == (4200.0, False)


def test_burst_is_judged_on_the_ratio_to_ideal() -> None:
    def m2(ours: float, ideal: float) -> dict[str, Any]:
        return {
            "burst": {
                "ours": {"signups": 5000, "clients": 8, "seconds": ours, "signup_seconds": 0.8},
                "ideal": {"signups": 5000, "clients": 8, "seconds": ideal, "signup_seconds": 0.8},
            }
        }

    assert _verdicts(m2(1.6, 0.8))["burst 5,000-signup"] == (2.0, True)
    assert _verdicts(m2(1.7, 0.8))["burst 5,000-signup"] == (2.12, False)
    assert _verdicts(m2(1.0, 0.0))["burst 5,000-signup"] == (None, False)  # no meaningful ratio


def test_signup_cost_judges_the_trigger_alone_at_32_clients_and_against_supabase_at_each() -> None:
    ratios = {
        "plain": {"1": 1.0, "32": 1.0},
        "supabase": {"1": 0.8, "32": 0.8},
        "ours_busy": {"1": 0.79, "32": 0.85},  # 1 client: not judged against 0.85, but against Supabase
    }
    verdicts = {
        t["target"]: (t["measured"], t["met"]) for t in targets({"signup_cost": {"ratio_vs_plain": ratios}})
    }
    assert verdicts["our trigger alone (publisher not idle) >= 0.85x no trigger, 32 clients"] == (0.85, True)
    assert verdicts["our trigger alone >= Supabase's synchronous trigger, 1 clients (ours - theirs)"] == (
        -0.01,
        False,
    )
    assert verdicts["our trigger alone >= Supabase's synchronous trigger, 32 clients (ours - theirs)"] == (
        0.05,
        True,
    )


def test_idle_consumers_must_not_poll() -> None:
    def idle(consumers: float, backends: float) -> dict[str, Any]:
        cores = {"consumers": consumers, "backends": backends, "redis": 0.5, "total": 9.9}
        return {"CPU": {"ours": {"idle_after_cores": cores}}}

    # Redis's own timer is not the publisher's doing: only processes + their backends count
    assert _verdicts(idle(0.004, 0.006))["CPU publisher + "] == (IDLE_CORES_MAX, True)
    assert _verdicts(idle(0.006, 0.006))["CPU publisher + "] == (0.012, False)


def test_chat_path_and_worker() -> None:
    results = {
        "chat_path": {"added_round_trips": 0.01},
        "worker": {"batched": {"profiles_per_s": 1000.0}},
    }
    verdicts = _verdicts(results)
    assert verdicts["chat_path chat fast pa"] == (0.01, False)
    assert verdicts["worker >= 1,000 pro"] == (1000.0, True)


@pytest.mark.parametrize(
    ("added_ms", "added_trips", "verdicts"),
    [(CLIENT_GUARD_MAX_MS, 0.0, [True, True]), (0.051, 0.0, [False, True]), (0.01, 1.0, [True, False])],
)
def test_chat_path_client_guard(added_ms: float, added_trips: float, verdicts: list[bool]) -> None:
    client = {"added_p50_ms": added_ms, "added_round_trips": added_trips}
    found = targets({"chat_path": {"added_round_trips": 0.0, "client": client}})
    assert [(t["target"], t["measured"], t["met"]) for t in found[1:]] == [
        (
            f"client insert guard (profile present) adds p50 <= {CLIENT_GUARD_MAX_MS} ms",
            added_ms,
            verdicts[0],
        ),
        ("client insert guard adds 0 round trips", added_trips, verdicts[1]),
    ]


def test_nothing_measured_nothing_judged() -> None:
    assert targets({"meta": {}}) == []
