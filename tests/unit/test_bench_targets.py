from typing import Any

import pytest

from bench.targets import CLIENT_GUARD_MAX_MS, IDLE_CORES_MAX, NOTIFY_WAKE_MAX_MS, targets


def _verdicts(results: dict[str, Any]) -> dict[str, tuple[float | None, bool]]:
    """metric + the target's first words -> (measured, met)."""
    return {f"{t['metric']} {t['target'][:12]}": (t["measured"], t["met"]) for t in targets(results)}


def _m1(p50: float, p99: float, low_max: float = 20.0) -> dict[str, Any]:
    return {
        "ours": {
            "5": {"n": 50, "p50_ms": 3.0, "p99_ms": 9.0, "max_ms": low_max},
            "250": {"n": 2500, "p50_ms": p50, "p99_ms": p99, "max_ms": 30.0},
        }
    }


@pytest.mark.parametrize(
    ("p50", "p99", "p50_met", "p99_met"),
    [(2.0, 8.0, True, True), (2.01, 7.99, False, True), (1.5, 8.01, True, False)],
)
def test_m1_thresholds_are_inclusive(p50: float, p99: float, p50_met: bool, p99_met: bool) -> None:
    verdicts = _verdicts({"M1": _m1(p50, p99)})
    assert verdicts["M1 p50 <= 2 ms "] == (p50, p50_met)
    assert verdicts["M1 p99 <= 8 ms "] == (p99, p99_met)


def test_m1_low_rate_proves_the_notify_wake_up() -> None:
    met = _verdicts({"M1": _m1(1.0, 2.0, low_max=NOTIFY_WAKE_MAX_MS)})
    assert met["M3 still woken "] == (NOTIFY_WAKE_MAX_MS, True)
    # a signup picked up only by the 5 s safety timer shows as a multi-second slowest profile
    slow = _verdicts({"M1": _m1(1.0, 2.0, low_max=4200.0)})
    assert slow["M3 still woken "] == (4200.0, False)


def test_m2_is_judged_on_the_ratio_to_ideal() -> None:
    def m2(ours: float, ideal: float) -> dict[str, Any]:
        return {
            "M2": {
                "ours": {"signups": 5000, "clients": 8, "seconds": ours, "signup_seconds": 0.8},
                "ideal": {"signups": 5000, "clients": 8, "seconds": ideal, "signup_seconds": 0.8},
            }
        }

    assert _verdicts(m2(1.6, 0.8))["M2 5,000-signup"] == (2.0, True)
    assert _verdicts(m2(1.7, 0.8))["M2 5,000-signup"] == (2.12, False)
    assert _verdicts(m2(1.0, 0.0))["M2 5,000-signup"] == (None, False)  # no meaningful ratio


def test_m3_judges_the_trigger_alone_and_live_at_32_clients() -> None:
    ratios = {
        "plain": {"1": 1.0, "32": 1.0},
        "ours_busy": {"1": 0.5, "32": 0.75},  # 1 client is not judged
        "ours_live": {"1": 0.9, "32": 0.74},
    }
    verdicts = _verdicts({"M3": {"ratio_vs_plain": ratios}})
    assert verdicts["M3 our trigger "] == (0.75, True)
    assert verdicts["M3 same, publis"] == (0.74, False)


def test_idle_consumers_must_not_poll() -> None:
    def idle(consumers: float, backends: float) -> dict[str, Any]:
        cores = {"consumers": consumers, "backends": backends, "redis": 0.5, "total": 9.9}
        return {"CPU": {"ours": {"idle_after_cores": cores}}}

    # Redis's own timer is not the publisher's doing: only processes + their backends count
    assert _verdicts(idle(0.004, 0.006))["CPU publisher + "] == (IDLE_CORES_MAX, True)
    assert _verdicts(idle(0.006, 0.006))["CPU publisher + "] == (0.012, False)


def test_m4_and_m6() -> None:
    results = {
        "M4": {"added_round_trips": 0.01},
        "M6": {"batched": {"profiles_per_s": 1000.0}},
    }
    verdicts = _verdicts(results)
    assert verdicts["M4 chat fast pa"] == (0.01, False)
    assert verdicts["M6 >= 1,000 pro"] == (1000.0, True)


@pytest.mark.parametrize(
    ("added_ms", "added_trips", "verdicts"),
    [(CLIENT_GUARD_MAX_MS, 0.0, [True, True]), (0.051, 0.0, [False, True]), (0.01, 1.0, [True, False])],
)
def test_m4_client_guard(added_ms: float, added_trips: float, verdicts: list[bool]) -> None:
    client = {"added_p50_ms": added_ms, "added_round_trips": added_trips}
    found = targets({"M4": {"added_round_trips": 0.0, "client": client}})
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
