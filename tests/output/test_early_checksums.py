"""Checksums computed while a restore agent starts: used only for the very file, unchanged.

``EarlyChecksums`` hashes what a manifest lists on its own thread; the verification
takes a checksum from it only when the file it opened has the device, inode, size and
times the thread saw, and only when the file's last change was ``EARLY_RACY_NS`` older than
the hashing (a change in the same tick of the file system's clock leaves the times as
they were). Whatever is changed after the hashing, the verification sees the file as
it is: hypothesis draws the change. The clock is injected: a file written by the test
is as old as the clock says.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baqup_agent import _restore
from baqup_agent._checksum import file_checksum
from baqup_agent._errors import DataError
from baqup_agent._logger import Logger
from baqup_agent._restore import EARLY_RACY_NS, EarlyChecksums, PublishedOutput
from tests.output.test_restore import publish_sample

ARTIFACTS = {"files.tar.zst": "sha256", "notes.gz": "blake2b", "raw/data.bin": "sha512"}


def publish(staging_dir: Path, logger: Logger) -> Path:
    # the raw artifact above the checksum's chunk: hashed the overlapped way
    return publish_sample(staging_dir, logger, raw_size=5 << 20)


def later() -> int:
    """A clock for which every file written so far is old enough to trust."""
    return time.time_ns() + 2 * EARLY_RACY_NS


def hashed(output: Path, clock: Callable[[], int]) -> EarlyChecksums:
    early = EarlyChecksums(str(output), clock)
    early._thread.join()
    return early


def next_tick(path: Path) -> None:
    """Wait until a change made now gets another ctime than ``path`` has: the change
    the test makes then is one the times show (the racy case is the next test's)."""
    probe = path.with_name(path.name + ".tick")
    before = path.stat().st_ctime_ns
    while True:
        probe.write_bytes(b"")
        if probe.stat().st_ctime_ns != before:
            probe.unlink()
            return
        time.sleep(0.001)


def test_an_old_unchanged_file_gets_its_checksum(staging_dir: Path, logger: Logger) -> None:
    output = publish(staging_dir, logger)
    early = hashed(output, later)
    for name, algorithm in ARTIFACTS.items():
        path = output / name
        assert early.take(name, path.stat(), algorithm) == file_checksum(path, algorithm)
        assert (
            early.take(name, path.stat(), "sha256" if algorithm != "sha256" else "sha512") is None
        )


def test_a_file_changed_lately_is_left_to_the_verification(
    staging_dir: Path, logger: Logger
) -> None:
    output = publish(staging_dir, logger)
    early = hashed(output, time.time_ns)  # the files were written just now
    for name, algorithm in ARTIFACTS.items():
        assert early.take(name, (output / name).stat(), algorithm) is None


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _flip_keeping_times(path: Path) -> None:
    st = path.stat()
    _flip(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _replace(path: Path) -> None:
    copy = path.with_name(path.name + ".new")
    copy.write_bytes(path.read_bytes()[::-1])
    os.replace(copy, path)


def _grow(path: Path) -> None:
    with path.open("ab") as f:
        f.write(b"x")


def _cut(path: Path) -> None:
    os.truncate(path, path.stat().st_size - 1)


CHANGES = {
    "flip": _flip,
    "flip keeping times": _flip_keeping_times,
    "replace": _replace,
    "grow": _grow,
    "cut": _cut,
}


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    change=st.sampled_from(sorted(CHANGES)),
    name=st.sampled_from(sorted(ARTIFACTS)),
    racy=st.booleans(),
)
def test_a_change_after_the_hashing_is_seen(
    tmp_path_factory: pytest.TempPathFactory, logger: Logger, change: str, name: str, racy: bool
) -> None:
    """Changed after the early hashing, in a later tick of the clock or (``racy``) as
    soon as written: the verification never takes the old checksum, and fails."""
    output = publish(tmp_path_factory.mktemp("early"), logger)
    _restore._early = hashed(output, time.time_ns if racy else later)
    try:
        if not racy:
            next_tick(output / name)
        CHANGES[change](output / name)
        published = PublishedOutput.open(output)
        with pytest.raises(DataError, match=r"bytes|checksum mismatch"):
            published.verify()
    finally:
        _restore.stop_early_checksums()


def test_the_verification_takes_the_early_checksum(
    staging_dir: Path, logger: Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = publish(staging_dir, logger)
    hashed_now: list[object] = []

    def spy(path: object, algorithm: str = "sha256") -> tuple[int, str]:
        hashed_now.append(path)
        return file_checksum(path, algorithm)  # type: ignore[arg-type]

    _restore._early = hashed(output, later)
    monkeypatch.setattr("baqup_agent._restore.file_checksum", spy)
    try:
        PublishedOutput.open(output).verify(strict=True)
    finally:
        _restore.stop_early_checksums()
    assert hashed_now == []  # every artifact's checksum came from the thread
    PublishedOutput.open(output).verify(strict=True)  # none started: hashed now
    assert len(hashed_now) == len(ARTIFACTS)


@pytest.mark.parametrize(
    "environ",
    [
        {"BAQUP_ROLE": "backup", "BAQUP_RESTORE_SOURCE": "/x"},
        {"BAQUP_ROLE": "restore"},
        {"BAQUP_ROLE": "restore", "BAQUP_RESTORE_SOURCE": ""},
        {},
    ],
)
def test_only_a_restore_job_starts_it(environ: dict[str, str]) -> None:
    _restore.start_early_checksums(environ)
    try:
        assert _restore._early is None
    finally:
        _restore.stop_early_checksums()


def test_take_waits_only_until_the_thread_has_passed_that_artifact(
    staging_dir: Path, logger: Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread busy with a later artifact: an earlier one it left to the verification
    (changed lately) is handed back at once, not after the rest (the verification goes
    in the manifest's order too)."""
    output = publish(staging_dir, logger)
    calls: list[int] = []

    def first_racy() -> int:  # the first artifact was written just now, the others long ago
        calls.append(1)
        return time.time_ns() if len(calls) == 1 else later()

    busy, release = threading.Event(), threading.Event()

    def slow_last(path: object, algorithm: str = "sha256") -> tuple[int, str]:
        if algorithm == "sha512":  # raw/data.bin, the last artifact
            busy.set()
            release.wait()
        return file_checksum(path, algorithm)  # type: ignore[arg-type]

    monkeypatch.setattr("baqup_agent._restore.file_checksum", slow_last)
    early = EarlyChecksums(str(output), first_racy)
    busy.wait()
    got: list[object] = []
    first = output / "files.tar.zst"
    taker = threading.Thread(
        target=lambda: got.append(early.take("files.tar.zst", first.stat(), "sha256"))
    )
    taker.start()
    taker.join(30)  # a hang guard, not a time window: it returns at once or never
    hung = taker.is_alive()
    release.set()
    taker.join()
    assert not hung
    assert got == [None]  # hashed by the verification itself
    assert early.take("notes.gz", (output / "notes.gz").stat(), "blake2b") == file_checksum(
        output / "notes.gz", "blake2b"
    )


def test_a_file_of_another_size_is_not_hashed(
    staging_dir: Path, logger: Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An artifact whose size is not the manifest's is refused by the verification
    before it reads a byte: the thread does not read it either (a huge file would keep
    it busy after the job)."""
    output = publish(staging_dir, logger)
    _grow(output / "raw" / "data.bin")
    read: list[str] = []

    def spy(path: object, algorithm: str = "sha256") -> tuple[int, str]:
        read.append(algorithm)
        return file_checksum(path, algorithm)  # type: ignore[arg-type]

    monkeypatch.setattr("baqup_agent._restore.file_checksum", spy)
    hashed(output, later)
    assert sorted(read) == ["blake2b", "sha256"]  # not raw/data.bin's sha512


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


@pytest.mark.parametrize(
    "damage",
    [
        lambda output: (output / "manifest.json").unlink(),
        lambda output: (output / "manifest.json").write_bytes(b"not json"),
        lambda output: (output / "manifest.json").write_bytes(b'{"artifacts": 7}'),
        lambda output: (output / "manifest.json").write_bytes(
            b'{"artifacts": [{"filename": "../x", "checksum_algorithm": "sha256"},'
            b' {"filename": "raw/data.bin", "checksum_algorithm": "md5x"},'
            b' {"filename": "notes.gz", "checksum_algorithm": "blake2b"}]}'
        ),
        lambda output: (output / "raw" / "data.bin").unlink(),
        lambda output: _fifo(output / "raw" / "data.bin"),  # never opened to block
        lambda output: _fifo(output / "manifest.json"),
    ],
)
def test_a_broken_source_ends_the_thread_quietly(
    staging_dir: Path, logger: Logger, damage: Callable[[Path], None]
) -> None:
    """Whatever is wrong is the verification's to report: the thread only ends (``take``
    never waits for it in vain), and what it hashed is what the files hold."""
    output = publish(staging_dir, logger)
    damage(output)
    early = hashed(output, later)
    assert not early._thread.is_alive()
    for name, algorithm in ARTIFACTS.items():
        path = output / name
        if path.is_file():
            assert early.take(name, path.stat(), algorithm) in (
                None,
                file_checksum(path, algorithm),
            )


def test_stop_ends_the_hashing_at_the_next_artifact(
    staging_dir: Path, logger: Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job over before the hashing (a bad configuration, in a process that goes on)
    leaves no thread reading the source: it stops at the next artifact."""
    output = publish(staging_dir, logger)
    started, release = threading.Event(), threading.Event()
    seen: list[str] = []

    def slow(path: object, algorithm: str = "sha256") -> tuple[int, str]:
        seen.append(algorithm)
        started.set()
        release.wait()
        return file_checksum(path, algorithm)  # type: ignore[arg-type]

    monkeypatch.setattr("baqup_agent._restore.file_checksum", slow)
    monkeypatch.setattr("baqup_agent._restore.EARLY_RACY_NS", -(10**12))
    _restore.start_early_checksums({"BAQUP_ROLE": "restore", "BAQUP_RESTORE_SOURCE": str(output)})
    early = _restore._early
    assert early is not None
    started.wait()  # the first artifact is being hashed
    _restore.stop_early_checksums()
    release.set()
    early._thread.join()
    assert seen == ["sha256"]  # the other two were never opened
    assert _restore._early is None
