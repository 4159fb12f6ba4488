"""Keys and the filesystem spool (no Redis)."""

from __future__ import annotations

import stat
from pathlib import Path

from baqup_agent._keys import default_spool_dir, job_keys
from baqup_agent._spool import Spool, read_lines


def test_every_key_carries_the_job_hash_tag() -> None:
    keys = job_keys("job-7")
    assert keys == (
        "baqup:{job-7}:events",
        "baqup:{job-7}:heartbeat",
        "baqup:{job-7}:result",
        "baqup:{job-7}:control",
    )


def test_default_spool_dir_prefers_spool_dir_then_staging() -> None:
    assert default_spool_dir("/s", "/st") == Path("/s")
    assert default_spool_dir(None, "/st") == Path("/st/.spool")
    assert default_spool_dir(None, None) is None


def test_append_writes_lines_in_order_and_creates_private_files(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "job-1")
    assert not spool.path.exists()  # nothing is created until a message is spooled
    for i in range(3):
        spool.append(b'{"seq":%d}' % i)
    spool.close()
    assert spool.events_path.read_bytes() == b'{"seq":0}\n{"seq":1}\n{"seq":2}\n'
    assert stat.S_IMODE(spool.events_path.stat().st_mode) & 0o007 == 0
    assert stat.S_IMODE(spool.path.stat().st_mode) & 0o007 == 0
    assert spool.last_seq() == 2
    assert spool.size == spool.events_path.stat().st_size


def test_replayed_offset_survives_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "job-1")
    for i in range(4):
        spool.append(b'{"seq":%d}' % i)
    first_two = spool.pending(2)
    assert [line for _, line in first_two] == [b'{"seq":0}', b'{"seq":1}']
    spool.mark_replayed(first_two[-1][0])
    spool.close()

    again = Spool(tmp_path, "job-1")
    assert again.has_pending
    assert [line for _, line in again.pending(10)] == [b'{"seq":2}', b'{"seq":3}']
    again.mark_replayed(again.size)
    assert not again.has_pending


def test_a_partial_last_line_from_a_crash_is_dropped(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "job-1")
    spool.append(b'{"seq":0}')
    spool.close()
    with open(spool.events_path, "ab") as f:
        f.write(b'{"seq":1, "trunc')  # the process died mid-append, before fsync returned

    reopened = Spool(tmp_path, "job-1")
    reopened.append(b'{"seq":1}')
    reopened.close()
    assert spool.events_path.read_bytes() == b'{"seq":0}\n{"seq":1}\n'
    assert reopened.last_seq() == 1


def test_read_lines_returns_complete_lines_and_where_to_go_on(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    assert read_lines(path) == ([], 0)  # missing file: nothing yet
    path.write_bytes(b"a\n\nbb\ncc")
    lines, offset = read_lines(path)
    assert lines == [(2, b"a"), (6, b"bb")]
    assert offset == 6
    with open(path, "ab") as f:
        f.write(b"c\n")
    assert read_lines(path, offset) == ([(10, b"ccc")], 10)


def test_read_lines_stops_at_the_limit_across_chunks(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    rows = [b"%06d" % i + b"x" * 1000 for i in range(600)]  # > 2 chunks of 256 KiB
    path.write_bytes(b"\n".join(rows) + b"\n")
    first, offset = read_lines(path, 0, limit=500)
    assert [line for _, line in first] == rows[:500]
    assert offset == first[-1][0]
    rest, end = read_lines(path, offset, limit=500)
    assert [line for _, line in rest] == rows[500:]
    assert end == path.stat().st_size
