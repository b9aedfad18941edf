"""CPU time spent by a scenario's consumers: their processes, their PostgreSQL backends, and the Redis server.

Read from /proc (Linux) and Redis INFO, so it costs nothing on the measured path. Signup senders and their
backends are the load, not the pipeline, and are not counted. Redis is the whole server: the bench's own
embedded one has no other users, a shared BENCH_REDIS_URL would add their load.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_proc_stat(text: str, ticks: int = _TICKS) -> tuple[int, float, float]:
    """From a /proc/<pid>/stat line (the command may hold ')'): parent pid, the process's user + system CPU
    seconds, and those of its children it has waited for (their own waited-for children included)."""
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is stat field 3 (state): ppid is field 4, utime/stime 14/15, cutime/cstime 16/17.
    own = (int(fields[11]) + int(fields[12])) / ticks
    return int(fields[1]), own, (int(fields[13]) + int(fields[14])) / ticks


def parse_machine_stat(text: str, ticks: int = _TICKS) -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine from /proc/stat (busy: user nice system irq softirq)."""
    line = next(row for row in text.splitlines() if row.startswith("cpu "))
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in line.split()[1:9])
    return (user + nice + system + irq + softirq) / ticks, steal / ticks


def machine_cpu() -> tuple[float, float]:
    return parse_machine_stat(Path("/proc/stat").read_text())


def _all_processes() -> dict[int, tuple[int, float, float]]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = parse_proc_stat((entry / "stat").read_text())
            except (OSError, ValueError, IndexError):
                continue  # exited while we looked
    return found


def descendants(processes: dict[int, tuple[int, float, float]], roots: list[int]) -> set[int]:
    """`roots` and every process below them, from a pid -> (ppid, ...) table."""
    wanted = {pid for pid in roots if pid in processes}
    while True:
        children = {pid for pid, row in processes.items() if row[0] in wanted} - wanted
        if not children:
            return wanted
        wanted |= children


def tree_cpu(roots: list[int]) -> dict[str, float]:
    """CPU seconds of each live process in the trees under `roots` (a worker's scheduler child counts too)."""
    processes = _all_processes()
    return {str(pid): processes[pid][1] for pid in descendants(processes, roots)}


def tree_total_cpu(roots: list[int]) -> float:
    """All CPU seconds ever used by these trees: live processes, and the exited ones they waited for."""
    processes = _all_processes()
    return sum(processes[pid][1] + processes[pid][2] for pid in descendants(processes, roots))


class OtherLoad:
    """CPU used on this machine outside this run's trees: this process and the servers it runs on (their
    daemons are not our children). Other users of a shared box show up here."""

    def __init__(self, roots: list[int]) -> None:
        self.roots = roots
        self.started = time.monotonic()
        self.machine = machine_cpu()
        self.ours = tree_total_cpu(roots)

    def cores(self) -> dict[str, float]:
        """Average cores busy outside this run, hypervisor steal, and this run's own, since creation."""
        wall = time.monotonic() - self.started
        busy, steal = machine_cpu()
        ours = tree_total_cpu(self.roots) - self.ours
        return {
            "others": round(max(0.0, busy - self.machine[0] - ours) / wall, 2),
            "steal": round((steal - self.machine[1]) / wall, 2),
            "bench": round(ours / wall, 2),
        }


def process_cpu(pids: list[int]) -> dict[str, float]:
    """CPU seconds of each of these processes that is still alive."""
    found: dict[str, float] = {}
    for pid in pids:
        try:
            found[str(pid)] = parse_proc_stat(Path(f"/proc/{pid}/stat").read_text())[1]
        except (OSError, ValueError, IndexError):
            continue
    return found


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> float:
    """CPU seconds used between two per-process samples; a process first seen in `after` counts in full."""
    return sum(max(0.0, used - before.get(key, 0.0)) for key, used in after.items())


@dataclass
class CpuProbe:
    """What to sample: consumer pids, the application_name of their backends, the Redis server."""

    database_url: str
    redis_url: str
    pids: list[int] = field(default_factory=list)
    backend_names: tuple[str, ...] = ()
    roles: dict[str, int] = field(default_factory=dict)  # e.g. "publisher" -> its process id

    def role_sample(self) -> dict[str, float]:
        """CPU seconds so far of each role's process tree, of the backends of each application_name, and of
        the Redis server (for a per-process breakdown; `sample` is the total)."""
        found = {role: tree_total_cpu([pid]) for role, pid in self.roles.items()}
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT application_name, pid FROM pg_stat_activity"
                " WHERE application_name = ANY(%s) AND datname = current_database()",
                (list(self.backend_names),),
            ).fetchall()
        for name, pid in rows:
            key = f"backend {name}"
            found[key] = found.get(key, 0.0) + sum(process_cpu([int(pid)]).values())
        found["redis"] = self._redis()
        return found

    def _backends(self) -> list[int]:
        if not self.backend_names:
            return []
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity"
                " WHERE application_name = ANY(%s) AND datname = current_database()",
                (list(self.backend_names),),
            ).fetchall()
        return [int(row[0]) for row in rows]

    def _redis(self) -> float:
        client = redis.Redis.from_url(self.redis_url)
        try:
            info = client.info("cpu")
        finally:
            client.close()
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def polls(self) -> int:
        """LLEN calls the Redis server has answered so far: our publisher's linger polls (one LLEN each; RQ
        itself does not use it), so an idle publisher that polls shows up here at once."""
        client = redis.Redis.from_url(self.redis_url)
        try:
            stats = client.info("commandstats")
        finally:
            client.close()
        return int(stats.get("cmdstat_llen", {}).get("calls", 0))

    def sample(self) -> dict[str, dict[str, float]]:
        return {
            "consumers": tree_cpu(self.pids),
            "backends": process_cpu(self._backends()),
            "redis": {"server": self._redis()},
        }


def role_usage(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per role between two `role_sample`s (a backend first seen in `after` counts in full)."""
    return {role: round(max(0.0, used - before.get(role, 0.0)), 4) for role, used in after.items()}


def usage(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> dict[str, float]:
    """CPU seconds per part (consumers, backends, redis) and in total between two samples."""
    parts = {part: round(cpu_delta(before[part], after[part]), 3) for part in after}
    return {**parts, "total": round(sum(parts.values()), 3)}
