"""The spool: batched commits, seq continuity across restarts, retention, and crash safety."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from nilm.parsing import parse_logger_rows
from nilm.records import READING_COLUMNS
from pi_agent.spool import Spool, row_to_json

T0 = 1_767_571_200_000_000  # 2026-01-05T00:00:00Z in µs
VALUES = [float(i) + 0.25 for i in range(len(READING_COLUMNS))]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_commits_are_batched_and_only_committed_rows_are_served(tmp_path: Path) -> None:
    clock = Clock()
    spool = Spool(tmp_path / "s.db", commit_interval_s=2.0, clock=clock)
    seqs = [spool.append(T0 + i * 1_000_000, VALUES) for i in range(3)]
    assert seqs == [1, 2, 3]
    assert not spool.flush_due() and spool.after(0, 10) == []
    clock.t = 2.0
    assert spool.flush_due() and spool.flush() == 3
    rows = spool.after(1, 10)
    assert [r[0] for r in rows] == [2, 3] and spool.stats.commits == 1
    assert spool.after(0, 2)[-1][0] == 2  # limit, oldest first
    spool.close()


def test_rows_parse_back_exactly(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    values = [121.3, 0.797, 86.7, 96.4, 0.9, 59.99, 121.8, 0.594, 63.4, 72.3, 0.88, 60.01]
    spool.append(T0 + 123_456, values)
    spool.flush()
    row = row_to_json(spool.after(0, 1)[0])
    assert row["timestamp_utc"] == "2026-01-05T00:00:00.123456Z"
    batch, rejections = parse_logger_rows([row], "home", source="agent")
    assert rejections == [] and batch.seq.tolist() == [1]
    assert batch.ts_us.tolist() == [T0 + 123_456]
    assert [batch.columns[c][0] for c in READING_COLUMNS] == values


def test_seq_continues_after_restart_and_unflushed_rows_are_renumbered(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    for i in range(5):
        spool.append(T0 + i, VALUES)
    spool.flush()
    spool.append(T0 + 5, VALUES)  # never committed: lost in the "crash"
    spool.close(flush=False)
    again = Spool(tmp_path / "s.db")
    assert again.last_seq == 5 and again.last_ts_us == T0 + 4
    assert again.append(T0 + 5, VALUES) == 6  # seq 6 was never served, so it may be reused
    again.flush()
    # Retention may delete everything; numbering still goes on from the meta table.
    again.retention_days = 0.0
    again.enforce_retention(T0 + 10**12)
    again.close()
    third = Spool(tmp_path / "s.db")
    assert third.count() == 0 and third.last_seq == 6 and third.append(T0, VALUES) == 7
    third.close()


def test_retention_by_age_and_by_size_counts_unfetched_rows(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", retention_days=1.0, max_bytes=10**9)
    day_us = 86_400_000_000
    for i in range(100):
        spool.append(T0 + i * day_us // 50, VALUES)  # two days of rows
    spool.flush()
    spool.after(20, 1)  # the PC has fetched up to seq 20
    deleted = spool.enforce_retention(T0 + 2 * day_us)
    assert deleted == 50 and spool.first_seq() == 51
    assert spool.stats.deleted_by_age == 50 and spool.stats.deleted_unfetched == 30

    for i in range(5000):
        spool.append(T0 + 2 * day_us + i, VALUES)
    spool.flush()
    size = spool.size_bytes()
    spool.max_bytes = size // 2
    spool.enforce_retention(T0 + 2 * day_us)
    assert spool.size_bytes() <= size // 2 + 8192  # within a page or two of the cap
    assert spool.stats.deleted_by_size > 2000
    remaining = spool.after(0, 10_000)
    assert remaining[-1][0] == spool.last_seq  # the newest are kept
    assert [r[0] for r in remaining] == list(range(remaining[0][0], spool.last_seq + 1))
    assert spool.integrity_ok()
    spool.close()


WRITER = textwrap.dedent(
    """
    import sys
    from pi_agent.spool import Spool
    spool = Spool(sys.argv[1], commit_interval_s=0.0)
    i = spool.last_seq
    while True:
        spool.append(1_767_571_200_000_000 + i * 1_000_000, [float(i)] * 12)
        i += 1
        if i % 7 == 0:
            spool.flush()
            print(spool.last_seq, flush=True)
    """
)


def test_sigkill_mid_write_never_corrupts_the_spool(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    committed = 0
    for _round in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None
            for _ in range(40 + 37 * _round):  # SIGKILL at a different point each round
                committed = int(proc.stdout.readline())
        finally:  # a writer that died or printed nonsense is not left running either
            proc.kill()  # SIGKILL
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        spool = Spool(path)
        assert spool.integrity_ok()
        assert spool.last_seq >= committed  # everything reported committed survived
        rows = spool.after(0, 100_000)
        assert [r[0] for r in rows] == list(range(1, spool.last_seq + 1))
        assert all(r[2] == r[0] - 1 for r in rows)  # each seq holds its own reading
        spool.close(flush=False)
