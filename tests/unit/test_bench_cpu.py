import pytest

from bench.cpu import cpu_delta, descendants, parse_machine_stat, parse_proc_stat, usage

# /proc/<pid>/stat of a process whose command holds a space and a ')': utime 250, stime 50 ticks,
# cutime 30, cstime 20, parent 4242.
PROC_STAT = (
    "1234 (rq: worker) x) S 4242 1234 1234 0 -1 4194560 12345 0 0 0 250 50 30 20 20 0 3 0 "
    "1000 123456789 4321 18446744073709551615 1 1 0 0 0 0 0 16781312 16386 0 0 0 17 1 0 0 0 0 0"
)

MACHINE_STAT = """\
cpu  1000 10 300 5000 40 5 15 20 0 0
cpu0 500 5 150 2500 20 3 7 10 0 0
intr 12345
"""


def test_proc_stat_reads_parent_and_cpu_past_a_tricky_command() -> None:
    ppid, own, children = parse_proc_stat(PROC_STAT, ticks=100)
    assert ppid == 4242
    assert own == pytest.approx(3.0)  # (250 + 50) / 100
    assert children == pytest.approx(0.5)  # (30 + 20) / 100


def test_machine_stat_busy_excludes_idle_iowait_and_reports_steal() -> None:
    busy, steal = parse_machine_stat(MACHINE_STAT, ticks=100)
    assert busy == pytest.approx((1000 + 10 + 300 + 5 + 15) / 100)
    assert steal == pytest.approx(0.2)


def test_cpu_delta_counts_new_processes_in_full_and_ignores_gone_ones() -> None:
    before = {"1": 2.0, "2": 5.0, "3": 1.0}
    after = {"1": 2.5, "2": 5.0, "4": 0.25}  # 3 exited, 4 started
    assert cpu_delta(before, after) == pytest.approx(0.75)
    # a pid reused by a younger process (less CPU than before) is not a negative amount
    assert cpu_delta({"1": 9.0}, {"1": 1.0}) == 0.0


def test_usage_totals_the_parts() -> None:
    before = {"consumers": {"1": 1.0}, "backends": {"7": 0.5}, "redis": {"server": 10.0}}
    after = {"consumers": {"1": 1.5}, "backends": {"7": 0.75, "8": 0.25}, "redis": {"server": 10.25}}
    assert usage(before, after) == {"consumers": 0.5, "backends": 0.5, "redis": 0.25, "total": 1.25}


def test_descendants_follow_the_whole_tree_only() -> None:
    table = {1: (0, 0.0, 0.0), 10: (1, 0.0, 0.0), 11: (10, 0.0, 0.0), 12: (11, 0.0, 0.0), 20: (1, 0.0, 0.0)}
    assert descendants(table, [10]) == {10, 11, 12}
    assert descendants(table, [10, 20]) == {10, 11, 12, 20}
    assert descendants(table, [99]) == set()
