"""Targets checked against the measured figures, and the results as JSON and a markdown table (pure)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.stats import ratio

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each DESIGN.md target the run measured: what it asks, the measured figure, whether it is met."""
    found: list[dict[str, Any]] = []

    def add(metric: str, target: str, measured: float | None, met: bool) -> None:
        found.append({"metric": metric, "target": target, "measured": measured, "met": met})

    m3 = results.get("M3")
    if m3 and "32" in m3["ratio_vs_plain"].get("ours_busy", {}):
        busy = m3["ratio_vs_plain"]["ours_busy"]["32"]
        add("M3", "our trigger (publisher not idle) >= 0.75x no trigger, 32 clients", busy, busy >= 0.75)
    if m3 and "32" in m3["ratio_vs_plain"].get("ours_live", {}):
        live = m3["ratio_vs_plain"]["ours_live"]["32"]
        add("M3", "same, publisher+worker running on the same cores", live, live >= 0.75)
    m1 = results.get("M1", {}).get("ours", {}).get("250")
    if m1:
        add("M1", "p50 <= 2 ms at 250 signups/s", m1["p50_ms"], m1["p50_ms"] <= 2)
        add("M1", "p99 <= 8 ms at 250 signups/s", m1["p99_ms"], m1["p99_ms"] <= 8)
    m2 = results.get("M2", {})
    if "ours" in m2 and "ideal" in m2:
        times = ratio(m2["ours"]["seconds"], m2["ideal"]["seconds"])
        add(
            "M2",
            "burst fully profiled within 2x the ideal batched SQL",
            times,
            times is not None and times <= 2,
        )
    m4 = results.get("M4")
    if m4:
        add("M4", "chat fast path adds 0 round trips", m4["added_round_trips"], m4["added_round_trips"] == 0)
    m6 = results.get("M6")
    if m6:
        per_s = m6["batched"]["profiles_per_s"]
        add("M6", ">= 1,000 profiles/s per worker process", per_s, per_s >= 1000)
    return found


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def markdown(results: dict[str, Any]) -> str:
    out = [f"# profilesync benchmark ({results['meta']['mode']} run, {results['meta']['started']})", ""]
    if "M1" in results:
        out.append("**M1** signup → profile latency, open-loop (ms, database clock)")
        rows = [
            [scenario, rate, s["n"], s["p50_ms"], s["p99_ms"], s["max_ms"], s["max_send_lag_ms"]]
            for scenario, by_rate in results["M1"].items()
            for rate, s in by_rate.items()
        ]
        out += _table(["scenario", "signups/s", "n", "p50", "p99", "max", "sender lag"], rows)
    if "M2" in results:
        ideal = results["M2"].get("ideal", {}).get("seconds")
        out.append("**M2** burst fully profiled (s); ratio vs ideal batched SQL")
        rows = [
            [scenario, s["signups"], s["clients"], s["signup_seconds"], s["seconds"],
             ratio(s["seconds"], ideal) if ideal else None]
            for scenario, s in results["M2"].items()
        ]  # fmt: skip
        out += _table(["scenario", "signups", "clients", "signing (s)", "all profiled (s)", "x ideal"], rows)
    if "M3" in results:
        m3 = results["M3"]
        clients = list(m3["tps"]["plain"])
        out.append(
            f"**M3** signups/s by pgbench ({m3['seconds_per_point']} s per point); ratio vs no trigger"
        )
        tps, ratios = m3["tps"], m3["ratio_vs_plain"]
        rows = [[v, *[f"{tps[v][c]:,.0f} ({ratios[v][c]:.2f}x)" for c in clients]] for v in tps]
        out += _table(["trigger", *[f"{c} clients" for c in clients]], rows)
    if "M4" in results:
        m4 = results["M4"]
        out.append(f"**M4** create_conversation with the profile present ({m4['calls']} calls)")
        rows = [
            [name, m4[name]["p50_ms"], m4[name]["p99_ms"], m4[name]["round_trips_per_call"]]
            for name in ("chat", "raw_insert")
        ]
        out += _table(["path", "p50 ms", "p99 ms", "round trips"], rows)
        out += [f"added p50: {m4['added_p50_ms']} ms, added round trips: {m4['added_round_trips']}", ""]
    if "M5" in results:
        m5 = results["M5"]
        out += [
            f"**M5** publisher: {m5['events_per_s']:,.0f} events/s ({m5['events']} events, "
            f"{m5['redis_round_trips']} Redis round trips)",
            "",
        ]
    if "M6" in results:
        out.append("**M6** one worker process (SimpleWorker, burst)")
        keys = ["users", "profiles_per_s", "redis_round_trips_per_profile", "redis_commands_per_profile"]
        rows = [[name, *[s[k] for k in keys]] for name, s in results["M6"].items()]
        out += _table(
            ["jobs", "users", "profiles/s", "Redis round trips/profile", "Redis commands/profile"], rows
        )
    if results.get("targets"):
        out.append("**Targets**")
        rows = [
            [t["metric"], t["target"], t["measured"], "met" if t["met"] else "NOT met"]
            for t in results["targets"]
        ]
        out += _table(["metric", "target", "measured", ""], rows)
    return "\n".join(out)


def write(results: dict[str, Any], directory: Path = RESULTS_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    path = directory / "latest.md"
    path.write_text(markdown(results) + "\n")
    return path
