"""The results as JSON and as markdown tables with ratios against the in-run baselines (pure)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.stats import ratio

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3f}" if 0 < abs(value) < 0.01 else f"{value:,.2f}"
    return str(value)


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _meta(meta: dict[str, Any]) -> list[str]:
    out = [f"# profilesync benchmark ({meta['mode']} run, {meta['started']})", ""]
    if "postgres" in meta:
        out.append(
            f"Machine: {meta['cpus']} CPUs, PostgreSQL {meta['postgres']}, {meta['redis']}, servers "
            f"{meta['servers']}; run took {meta.get('seconds', '?')} s."
        )
    load = meta.get("cpu_cores_during_run")
    if load:
        out.append(
            f"CPU during the run (average cores): bench {load['bench']}, other processes on the box "
            f"{load['others']}, hypervisor steal {load['steal']}; load average at start "
            f"{meta.get('load_average_at_start')}, at end {meta.get('load_average_at_end')}."
        )
    return [*out, ""]


def _latency(results: dict[str, Any]) -> list[str]:
    ideal = results["latency"].get("ideal", {})
    rows = []
    for scenario, by_rate in results["latency"].items():
        for rate, s in by_rate.items():
            base = ideal.get(rate)
            cpu = s.get("cpu_ms_per_signup", {}).get("total")
            rows.append(
                [scenario, rate, s["n"], s["p50_ms"], s["p99_ms"], s["max_ms"],
                 _x(ratio(s["p50_ms"], base["p50_ms"])) if base else "-",
                 _x(ratio(s["p99_ms"], base["p99_ms"])) if base else "-",
                 cpu, s.get("polls_per_signup"), s.get("redis_bytes_per_signup"), s["max_send_lag_ms"]]
            )  # fmt: skip
    header = ["scenario", "signups/s", "n", "p50", "p99", "max", "p50 x ideal", "p99 x ideal"]
    return [
        "**latency** signup → profile latency, open-loop (ms, database clock); pipeline CPU ms per signup "
        "(consumer processes + their PostgreSQL backends + Redis)",
        *table(
            [*header, "CPU ms/signup", "publisher polls/signup", "Redis bytes kept/signup", "sender lag ms"],
            rows,
        ),
    ]


def _stages(by_rate: dict[str, Any]) -> list[str]:
    rates = list(by_rate)
    names = list(next(iter(by_rate.values()))["stages"])
    rows: list[list[Any]] = [
        [name.replace("_", " "), *[_p50_p99(by_rate[r]["stages"].get(name)) for r in rates]] for name in names
    ]
    for process in ("publisher", "worker"):
        trips = [by_rate[r]["redis_round_trips_per_signup"].get(process) for r in rates]
        rows.append([f"Redis round trips per signup: {process}", *trips])
    roles = sorted({role for r in rates for role in by_rate[r].get("cpu_ms_per_signup", {})})
    for role in roles:
        rows.append(
            [f"CPU ms per signup: {role}", *[by_rate[r]["cpu_ms_per_signup"].get(role) for r in rates]]
        )
    rows.append(
        ["signups traced / jobs", *[f"{by_rate[r]['signups_traced']} / {by_rate[r]['jobs']}" for r in rates]]
    )
    return [
        "**Stages** of `ours` per signup, p50 / p99 ms (wall clock; see bench/stages.py), and each process's "
        "Redis round trips and CPU per signup",
        *table(["stage", *[f"{r}/s" for r in rates]], rows),
    ]


def _p50_p99(stage: dict[str, float] | None) -> str:
    return "-" if stage is None else f"{stage['p50_ms']:.2f} / {stage['p99_ms']:.2f}"


def _cpu(results: dict[str, Any]) -> list[str]:
    rows = []
    for scenario, cpu in results["CPU"].items():
        for when in ("idle_before_cores", "idle_after_cores"):
            if when in cpu:
                c = cpu[when]
                rows.append(
                    [scenario, when.split("_")[1], c["consumers"], c["backends"], c["redis"],
                     c.get("polls_per_s")]
                )  # fmt: skip
    header = ["scenario", "when", "processes", "their PG backends", "Redis server", "publisher polls/s"]
    return [
        "**Idle** consumers (CPU cores) before any signup and after the latency loads",
        *table(header, rows),
    ]


def _burst(results: dict[str, Any]) -> list[str]:
    ideal = results["burst"].get("ideal", {}).get("seconds")
    rows = [
        [scenario, s["signups"], s["clients"], s["signup_seconds"], s["seconds"],
         _x(ratio(s["seconds"], ideal)) if ideal else "-"]
        for scenario, s in results["burst"].items()
    ]  # fmt: skip
    return [
        "**burst** a signup burst fully profiled (s, first signup → last profile); ratio vs ideal batched "
        "SQL",
        *table(["scenario", "signups", "clients", "signing (s)", "all profiled (s)", "x ideal"], rows),
    ]


def _tps_cells(tps: dict[str, Any], ratios: dict[str, Any], clients: list[str]) -> list[str]:
    return [f"{tps[c]:,.0f} ({_x(ratios[c])})" if c in tps else "-" for c in clients]


def _signup_cost(results: dict[str, Any]) -> list[str]:
    cost = results["signup_cost"]
    tps, ratios = cost["tps"], cost["ratio_vs_plain"]
    clients = list(tps["plain"])
    cores = cost.get("consumer_cores", {})
    backlog = cost.get("backlog_at_end", {})
    rows = []
    for variant in tps:
        extra = [
            "/".join(_fmt(cores[variant][c]) for c in clients) if variant in cores else "-",
            "/".join(str(backlog[variant][c]) for c in clients) if variant in backlog else "-",
        ]
        rows.append([variant, *_tps_cells(tps[variant], ratios[variant], clients), *extra])
    header = ["trigger", *[f"{c} clients" for c in clients], "consumer cores", "backlog at end"]
    out = [
        f"**signup_cost** signups/s by pgbench ({cost['seconds_per_point']} s per point, best of "
        f"{cost.get('rounds', 1)} interleaved rounds); ratio vs no trigger "
        "(`ours_busy`/`ours_idle`: our trigger with the publisher flag forced; `*_live`: publisher + worker "
        "running on the same cores; `ablation_*`: variants of our trigger, see bench/ablations.py)",
        *table(header, rows),
    ]
    cpu = cost.get("trigger_cpu")
    if cpu:
        rows = [[v, us, cpu["added_us_per_signup"][v]] for v, us in cpu["us_per_signup"].items()]
        out += [
            f"**signup_cost trigger CPU**: one backend's CPU per signup "
            f"(µs; {cpu['signups_per_sample']} pipelined autocommit signups, synchronous_commit off, "
            f"median of {cpu['rounds']} interleaved rounds)",
            *table(["trigger", "µs per signup", "added vs no trigger"], rows),
        ]
    for workload, found in cost.get("workloads", {}).items():
        rows = [
            [variant, *_tps_cells(found["tps"][variant], found["ratio_vs_plain"][variant], clients)]
            for variant in found["tps"]
        ]
        out += [
            f"**signup_cost `{workload}`** transactions/s, ratio vs no trigger",
            *table(["trigger", *[f"{c} clients" for c in clients]], rows),
        ]
    return out + _workload_cpu(cost.get("workload_cpu"))


def _workload_cpu(cpu: dict[str, Any] | None) -> list[str]:
    if not cpu:
        return []
    us, ratios = cpu["us_per_transaction"], cpu["ratio_vs_plain"]
    variants = list(next(iter(us.values())))
    rows = [[w, *(f"{us[w][v]} ({_x(ratios[w][v])})" for v in variants)] for w in us]
    return [
        f"**signup_cost workload CPU**: one backend's CPU per transaction of the auth server (µs; "
        f"{cpu['transactions_per_sample']} server-side transactions, median of {cpu['rounds']} interleaved "
        "rounds); in parentheses transactions per CPU second vs no trigger",
        *table(["workload", *variants], rows),
    ]


def _chat_path(chat: dict[str, Any]) -> list[str]:
    rows = [
        [name, chat[name]["p50_ms"], chat[name]["p99_ms"], chat[name]["round_trips_per_call"]]
        for name in ("chat", "raw_insert")
    ]
    return [
        f"**chat_path** create_conversation with the profile present ({chat['calls']} calls) vs a raw INSERT",
        *table(["path", "p50 ms", "p99 ms", "round trips"], rows),
        f"added p50: {chat['added_p50_ms']} ms, added round trips: {chat['added_round_trips']}",
        "",
        *_chat_path_client(chat.get("client")),
    ]


def _chat_path_client(client: dict[str, Any] | None) -> list[str]:
    if not client:
        return []
    rows = [
        [name, client[name]["p50_ms"], client[name]["p99_ms"], client[name]["round_trips_per_call"]]
        for name in ("guarded_insert", "raw_insert")
    ]
    return [
        "**chat_path client** a Supabase client's insert through PostgREST (`authenticated` + JWT claims, "
        f"profile present, {client['calls']} calls): with the client guarantee's trigger vs a trigger-less "
        "twin",
        *table(["insert", "p50 ms", "p99 ms", "round trips"], rows),
        f"added p50: {client['added_p50_ms']} ms (median of paired differences "
        f"{client['added_p50_paired_ms']} ms), added round trips: {client['added_round_trips']}, added "
        f"server CPU per insert (p50): {client.get('added_backend_cpu_p50_ms', '-')} ms",
        "",
    ]


def _publisher_and_worker(results: dict[str, Any]) -> list[str]:
    out = []
    if "publisher" in results:
        publisher = results["publisher"]
        out += [
            f"**publisher** {publisher['events_per_s']:,.0f} events/s ({publisher['events']} events "
            f"in {publisher['seconds']} s, {publisher['redis_round_trips']} Redis round trips)",
            "",
        ]
    if "worker" in results:
        worker = results["worker"]
        naive = worker.get("one_job_per_user", {}).get("profiles_per_s")
        keys = ["users", "profiles_per_s", "redis_round_trips_per_profile", "redis_commands_per_profile"]
        rows = [
            [name, *[s[k] for k in keys], _x(ratio(s["profiles_per_s"], naive)) if naive else "-"]
            for name, s in worker.items()
        ]
        header = ["jobs", "users", "profiles/s", "Redis round trips/profile", "Redis commands/profile"]
        out += [
            "**worker** one worker process (SimpleWorker, burst)",
            *table([*header, "x one job per user"], rows),
        ]
    return out


def _sweeper(sweep: dict[str, Any]) -> list[str]:
    return [
        f"**sweeper** the publisher's sweeper over {sweep['users']:,} users, {sweep['limit']:,} per run: "
        f"{sweep['run_ms_median']} ms per run (median; max {sweep['run_ms_max']}), "
        f"{sweep['runs_per_lap']} runs and {sweep['lap_ms']:,} ms per lap over every user; "
        f"{sweep['recorded']:,} unrecorded users recorded",
        "",
    ]


def markdown(results: dict[str, Any]) -> str:
    out = _meta(results["meta"])
    if "latency" in results:
        out += _latency(results)
    if results.get("STAGES", {}).get("ours"):
        out += _stages(results["STAGES"]["ours"])
    if "CPU" in results:
        out += _cpu(results)
    if "burst" in results:
        out += _burst(results)
    if "signup_cost" in results:
        out += _signup_cost(results)
    if "chat_path" in results:
        out += _chat_path(results["chat_path"])
    out += _publisher_and_worker(results)
    if "sweeper" in results:
        out += _sweeper(results["sweeper"])
    if results.get("targets"):
        rows = [
            [t["metric"], t["target"], t["measured"], "met" if t["met"] else "**NOT met**"]
            for t in results["targets"]
        ]
        out += ["**Targets**", *table(["metric", "target", "measured", "verdict"], rows)]
    return "\n".join(out)


def write(results: dict[str, Any], directory: Path = RESULTS_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    path = directory / "latest.md"
    path.write_text(markdown(results) + "\n")
    return path
