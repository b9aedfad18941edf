"""The soak's results as markdown, and both written to bench/results/chaos-<time>.{json,md} (pure but for
`write`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.chaos.audit import RECOVERY
from bench.report import RESULTS_DIR, table
from bench.stats import ratio
from profilesync.devkit.faults import WORKER_KILL_BOUND


def passed(results: dict[str, Any]) -> bool:
    return all(check["ok"] for check in results["checks"])


def _latency_line(figures: dict[str, Any]) -> str:
    calm, faulted = figures["signup_latency_calm"], figures["signup_latency_during_faults"]
    if not calm.get("n") or not faulted.get("n"):
        return "signup latency: too few signups to compare calm and faulted periods"
    x = ratio(faulted["p99_ms"], calm["p99_ms"])
    return (
        f"signup transaction (GoTrue's three statements) p50 / p99 / max: calm {calm['p50_ms']} / "
        f"{calm['p99_ms']} / {calm['max_ms']} ms (n {calm['n']}), during faults {faulted['p50_ms']} / "
        f"{faulted['p99_ms']} / {faulted['max_ms']} ms (n {faulted['n']}): p99 {x}x"
    )


def markdown(results: dict[str, Any]) -> str:
    meta, figures = results["meta"], results["figures"]
    options = meta["options"]
    waits = figures["wait_s"]
    verdict = "PASSED" if passed(results) else "FAILED"
    timers = ", ".join(f"{k.removeprefix('PROFILESYNC_')}={v}" for k, v in meta["timers"].items())
    out = [
        f"# profilesync chaos soak ({options['minutes']:g} min, seed {options['seed']}, {meta['started']}): "
        f"{verdict}",
        "",
        f"`{meta['command']}` on {meta['cpus']} CPUs, private PostgreSQL {meta['postgres']} (fsync on) and "
        f"{meta['redis']}; publisher and {options['workers']} workers as real processes (open files "
        f"{options['open_files']}), short timers ({timers}); "
        f"{options['rate']:g} GoTrue signups/s; a fault every {options['interval'][0]:g} to "
        f"{options['interval'][1]:g} s; run took {meta['seconds']} s.",
        "",
        "**Audit**",
        *table(
            ["check", "measured", "expected", "verdict"],
            [
                [c["name"], c["measured"], c["expected"], "ok" if c["ok"] else "**FAILED**"]
                for c in results["checks"]
            ],
        ),
        f"¹ {RECOVERY:.0f} s after the signup, or after the end of the last fault that hit it (a worker "
        f"killed mid-job: {WORKER_KILL_BOUND} s, RQ's started-registry expiry and maintenance pass).",
        "",
        f"{figures['signups_committed']:,} of {figures['signups_attempted']:,} signups committed "
        f"(errors: {figures['signup_errors'] or 'none'}); {figures['users']:,} live users, "
        f"{figures['soft_deleted']} soft-deleted, {figures['profiles']:,} profiles, "
        f"{figures['redundant_runs']:,} redundant creation attempts (at-least-once delivery, no effect).",
        "",
        f"signup → profile wait (s): p50 {waits['p50']}, p99 {waits['p99']}, max {waits['max']}.",
        "",
        _latency_line(figures),
        "",
        f"processes that exited on their own (started again by the supervisor): "
        f"{figures['exited_on_their_own'] or 'none'}; exit codes at the end (SIGTERM): "
        f"{figures['exit_codes_at_stop']}.",
        "",
        "**Faults** (worst wait: the longest wait of the users who signed up from this fault to the next)",
        *table(
            ["at s", "fault", "took s", "what happened", "worst wait s"],
            [[f["at_s"], f["fault"], f["took_s"], f["note"], f["worst_wait_s"]] for f in results["faults"]],
        ),
    ]
    return "\n".join(out)


def write(results: dict[str, Any], directory: Path = RESULTS_DIR) -> Path:
    """chaos-<UTC time>.json and .md in `directory`; returns the markdown's path."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = results["meta"]["started"].replace(" UTC", "").replace(" ", "-").replace(":", "")
    path = directory / f"chaos-{stamp}.md"
    path.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    path.write_text(markdown(results) + "\n")
    return path
