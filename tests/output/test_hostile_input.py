"""Restore input is hostile until verified (issue 9, section 2), each item as a class.

Generated members of each class: non-regular files of every kind where a manifest or an
artifact should be; extended tar headers of random sizes; compressed artifacts cut at
any offset or with a byte flipped, whose manifest checksum was made to match (an
attacker controls both); random paths through symlinks against a relative and an
absolute boundary; file names that are not UTF-8; wrong ``source_metadata`` for the
example agents; unusable staging directories.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baqup_agent._archive import MAX_EXTENDED_HEADER, create_tar, extract_tar
from baqup_agent._artifacts import open_decompressed
from baqup_agent._errors import CantCreateOutput, ConfigError, DataError
from baqup_agent._job import run_job
from baqup_agent._logger import Logger
from baqup_agent._paths import open_regular, safe_join
from baqup_agent._restore import PublishedOutput
from baqup_agent._staging import Staging, check_staging_dir
from tests.agent.helpers import FS_AGENT, SAMPLE_AGENT, SQLITE_AGENT, job_env, load_agent

FilesystemAgent = load_agent(FS_AGENT, "FilesystemAgent")
SqliteAgent = load_agent(SQLITE_AGENT, "SqliteAgent")
SampleAgent = load_agent(SAMPLE_AGENT, "SampleAgent")
FUZZ = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def run(agent: type, env: dict[str, str]) -> tuple[int, str]:
    stream = io.StringIO()
    code = run_job(agent, environ=env, install_signals=False, log_stream=stream)
    return code, stream.getvalue()


def finishes(fn: Callable[[], object]) -> BaseException | None:
    """Run ``fn`` in a thread; it must end (a blocking open would hang); its exception."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            fn()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(30)  # generous: the bug is a hang forever, not a slow open
    assert outcome, "blocked"
    return outcome[0]


# -- not a regular file ------------------------------------------------------------------

KINDS = ["fifo", "directory", "socket", "symlink-to-file", "symlink-to-fifo", "symlink-to-dev"]


def make_kind(path: Path, kind: str, scratch: Path) -> None:
    """A non-regular entry of ``kind`` at ``path`` (a device is reached through a symlink
    to /dev/null, which every Linux has; creating one needs root)."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(path))
    elif kind == "symlink-to-file":
        (scratch / "real").write_bytes(b"{}")
        path.symlink_to(scratch / "real")
    elif kind == "symlink-to-fifo":
        os.mkfifo(scratch / "pipe")
        path.symlink_to(scratch / "pipe")
    else:
        path.symlink_to("/dev/null")


def test_open_regular_refuses_devices() -> None:
    for device in ("/dev/null", "/dev/zero"):
        with pytest.raises(DataError, match="character device"):
            open_regular(device)


@pytest.fixture
def published(staging_dir: Path, logger: Logger) -> Path:
    """A published output of the filesystem agent's shape (one zstd tar)."""
    source = staging_dir.parent / "tree"
    (source / "d").mkdir(parents=True)
    (source / "d" / "f.txt").write_bytes(b"payload" * 100)
    s = Staging(staging_dir, "job-1", logger)
    s.prepare()
    with s.artifact("files.tar.zst") as w:
        stats = create_tar(w, source)
    return s.publish(agent="filesystem", agent_version="1", source_metadata={"files": stats.files})


@FUZZ
@given(kind=st.sampled_from(KINDS), where=st.sampled_from(["manifest", "artifact"]))
def test_non_regular_manifest_or_artifact_is_65_at_once(
    published: Path, tmp_path_factory: pytest.TempPathFactory, kind: str, where: str
) -> None:
    scratch = tmp_path_factory.mktemp("kind")
    victim = published / ("manifest.json" if where == "manifest" else "files.tar.zst")
    saved = victim.read_bytes()
    victim.unlink()
    make_kind(victim, kind, scratch)
    try:

        def restore() -> None:
            PublishedOutput.open(published).verify()

        error = finishes(restore)
        assert isinstance(error, DataError) and error.exit_code == 65, error
    finally:
        if victim.is_dir() and not victim.is_symlink():
            victim.rmdir()
        else:
            victim.unlink()
        victim.write_bytes(saved)


def test_missing_restore_source_is_64_and_a_dir_without_manifest_65(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as info:
        PublishedOutput.open(tmp_path / "nowhere")
    assert info.value.exit_code == 64
    with pytest.raises(DataError, match="no manifest"):
        PublishedOutput.open(tmp_path)
    env = job_env(tmp_path / "st", role="restore", BAQUP_RESTORE_SOURCE=str(tmp_path / "gone"))
    code, log = run(FilesystemAgent, {**env, "BAQUP_FS_TARGET": str(tmp_path / "t")})
    assert code == 64 and "does not exist" in log


# -- bounded extended headers ------------------------------------------------------------


class CountingReader(io.RawIOBase):
    """A tar stream declaring an extended header of ``size`` bytes, then endless 'a's:
    counts what the reader asked for."""

    def __init__(self, kind: bytes, size: int) -> None:
        info = tarfile.TarInfo("x")
        info.type, info.size = kind, size
        self._head = info.tobuf(tarfile.GNU_FORMAT)  # base-256 sizes beyond 8 GiB
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        head = self._head[self.served : self.served + len(view)]
        view[: len(head)] = head
        view[len(head) :] = b"a" * (len(view) - len(head))  # then filler
        self.served += len(view)
        return len(view)


EXTENDED = [tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK]


@FUZZ
@given(
    kind=st.sampled_from(EXTENDED),
    size=st.integers(MAX_EXTENDED_HEADER + 1, 1 << 40),
)
def test_oversized_extended_header_is_refused_before_it_is_read(
    tmp_path_factory: pytest.TempPathFactory, kind: bytes, size: int
) -> None:
    stream = CountingReader(kind, size)
    with pytest.raises(DataError, match="extended header"):
        extract_tar(io.BufferedReader(stream, 1 << 16), tmp_path_factory.mktemp("x") / "t")
    assert stream.served <= 2 << 20  # one read-ahead chunk, never the declared size


@FUZZ
@given(kind=st.sampled_from(EXTENDED), size=st.integers(0, MAX_EXTENDED_HEADER))
def test_extended_header_within_the_cap_is_parsed_not_refused_for_size(
    tmp_path_factory: pytest.TempPathFactory, kind: bytes, size: int
) -> None:
    """Below the cap the header is read (garbage here, so tarfile may still refuse it as
    corrupt), but never for its size."""
    info = tarfile.TarInfo("x")
    info.type, info.size = kind, size
    data = info.tobuf(tarfile.USTAR_FORMAT) + b"a" * size + bytes(-size % 512) + bytes(1024)
    try:
        extract_tar(io.BytesIO(data), tmp_path_factory.mktemp("x") / "t")
    except DataError as exc:
        assert "extended header of" not in str(exc)


def test_a_chain_of_extended_headers_is_refused(tmp_path: Path) -> None:
    data = b""
    for _ in range(200):
        info = tarfile.TarInfo("x")
        info.type, info.size = tarfile.GNUTYPE_LONGNAME, 512
        data += info.tobuf(tarfile.USTAR_FORMAT) + b"n" * 511 + b"\0"
    with pytest.raises(DataError, match="in a row"):
        extract_tar(io.BytesIO(data + bytes(1024)), tmp_path / "t")


def test_sparse_members_are_refused(tmp_path: Path) -> None:
    for pax in (
        {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "s"},
        {"GNU.sparse.size": "10", "GNU.sparse.numblocks": "1", "GNU.sparse.map": "0,1"},
    ):
        info = tarfile.TarInfo("s")
        info.pax_headers = pax
        info.size = 512
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(info, io.BytesIO(b"\0" * 512))
        with pytest.raises(DataError, match="sparse"):
            extract_tar(io.BytesIO(buffer.getvalue()), tmp_path / "t")


_PEAK = """
import resource, sys
from baqup_agent._archive import extract_tar
from baqup_agent._artifacts import open_decompressed
from baqup_agent._errors import DataError
try:
    with open_decompressed(sys.argv[1], "zstd") as f:
        extract_tar(f, sys.argv[2])
except DataError as exc:
    print("DataError", exc)
with open("/proc/self/status") as f:
    print("peak", int(f.read().split("VmHWM:")[1].split()[0]) * 1024)
"""


def test_a_150_mb_header_in_a_small_artifact_keeps_memory_low(tmp_path: Path) -> None:
    size = 150 << 20
    info = tarfile.TarInfo("x")
    info.type, info.size = tarfile.XHDTYPE, size
    artifact = tmp_path / "bomb.tar.zst"
    with open(artifact, "wb") as raw:
        writer = zstandard.ZstdCompressor(level=3).stream_writer(raw)
        writer.write(info.tobuf(tarfile.USTAR_FORMAT))
        chunk = b"a" * (1 << 20)
        for _ in range(size >> 20):
            writer.write(chunk)
        writer.flush(zstandard.FLUSH_FRAME)
    assert artifact.stat().st_size < 64 << 10
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, str(artifact), str(tmp_path / "t")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "DataError" in done.stdout
    peak = int(done.stdout.split("peak")[1])
    assert peak < 100 << 20, f"peak RSS {peak / 2**20:.0f} MiB"


# -- decompression failures --------------------------------------------------------------


def tar_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


PAYLOAD = tar_of({f"f{i}": os.urandom(3000) + b"text " * 2000 for i in range(4)})
COMPRESSED = {
    "zstd": zstandard.ZstdCompressor(write_checksum=True).compress(PAYLOAD),
    "zstd-nochecksum": zstandard.ZstdCompressor().compress(PAYLOAD),
    "gzip": gzip.compress(PAYLOAD),
}


def restore_bytes(data: bytes, compression: str, where: Path) -> None:
    """Extract ``data`` stored as an artifact with ``compression`` into ``where/t``."""
    artifact = where / "a"
    artifact.write_bytes(data)
    with open_decompressed(artifact, compression) as f:
        extract_tar(f, where / "t")


@FUZZ
@given(codec=st.sampled_from(sorted(COMPRESSED)), cut=st.floats(0, 1, exclude_max=True))
def test_an_artifact_cut_anywhere_is_a_data_error(
    tmp_path_factory: pytest.TempPathFactory, codec: str, cut: float
) -> None:
    data = COMPRESSED[codec]
    where = tmp_path_factory.mktemp("cut")
    with pytest.raises(DataError):
        restore_bytes(data[: int(len(data) * cut)], codec.split("-")[0], where)


@FUZZ
@given(
    codec=st.sampled_from(["zstd", "gzip"]),
    position=st.floats(0, 1, exclude_max=True),
    bit=st.integers(0, 7),
)
def test_a_flipped_bit_is_a_data_error(
    tmp_path_factory: pytest.TempPathFactory, codec: str, position: float, bit: int
) -> None:
    data = bytearray(COMPRESSED[codec])
    data[int(len(data) * position)] ^= 1 << bit
    with pytest.raises(DataError):
        restore_bytes(bytes(data), codec, tmp_path_factory.mktemp("flip"))


@pytest.mark.parametrize(
    ("stored", "label"),
    [("zstd", "gzip"), ("gzip", "zstd"), ("zstd", "none"), ("gzip", "none")],
)
def test_a_stream_of_another_format_is_a_data_error(
    tmp_path: Path, stored: str, label: str
) -> None:
    with pytest.raises(DataError):
        restore_bytes(COMPRESSED[stored], label, tmp_path)


def test_every_codec_round_trips(tmp_path: Path) -> None:
    for codec, data in COMPRESSED.items():
        (tmp_path / codec).mkdir()
        restore_bytes(data, codec.split("-")[0], tmp_path / codec)
        assert (tmp_path / codec / "t" / "f0").stat().st_size == 13000


def replace_artifact(output: Path, name: str, data: bytes) -> None:
    """Store ``data`` as ``name`` and make the manifest agree, as an attacker would."""
    (output / name).write_bytes(data)
    manifest = json.loads((output / "manifest.json").read_bytes())
    for artifact in manifest["artifacts"]:
        if artifact["filename"] == name:
            artifact["size_bytes"] = len(data)
            artifact["checksum_value"] = hashlib.sha256(data).hexdigest()
    (output / "manifest.json").write_text(json.dumps(manifest))


def test_a_cut_artifact_with_a_matching_manifest_exits_65(published: Path, tmp_path: Path) -> None:
    data = (published / "files.tar.zst").read_bytes()
    replace_artifact(published, "files.tar.zst", data[: len(data) // 2])
    env = job_env(tmp_path / "st", role="restore", BAQUP_RESTORE_SOURCE=str(published))
    code, log = run(FilesystemAgent, {**env, "BAQUP_FS_TARGET": str(tmp_path / "t")})
    assert code == 65, log
    assert "truncated" in log


# -- one answer for relative and absolute boundaries -------------------------------------


@pytest.fixture
def boundary_tree(tmp_path: Path) -> Path:
    """out/{a/, b/f, a/in -> ../b, a/up -> .., esc -> ../outside, abs -> /tmp} and a
    sibling outside/secret."""
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "b").mkdir()
    (out / "b" / "f").write_text("inside")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("outside")
    (out / "a" / "in").symlink_to("../b")
    (out / "a" / "up").symlink_to("..")
    (out / "esc").symlink_to("../outside")
    (out / "abs").symlink_to(tmp_path / "outside")
    return out


SEGMENTS = ["a", "b", "f", "in", "up", "esc", "abs", "secret", ".", "missing"]


@FUZZ
@given(parts=st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=5))
def test_safe_join_answers_alike_for_relative_and_absolute_boundaries(
    boundary_tree: Path, monkeypatch: pytest.MonkeyPatch, parts: list[str]
) -> None:
    relative = "/".join(parts)
    monkeypatch.chdir(boundary_tree.parent)
    answers: list[str | None] = []
    for boundary in (boundary_tree, Path("out"), Path("./out/")):
        try:
            joined = safe_join(boundary, relative)
        except DataError:
            answers.append(None)
            continue
        real = os.path.realpath(joined)
        assert os.path.commonpath([real, str(boundary_tree)]) == str(boundary_tree)
        answers.append(real)
    assert answers[0] == answers[1] == answers[2]


def test_relative_restore_source_cannot_verify_a_file_outside(
    published: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An artifact directory that is a symlink out of the output is refused whichever way
    the source was named."""
    secret_dir = published.parent / "elsewhere"
    secret_dir.mkdir()
    data = (published / "files.tar.zst").read_bytes()
    (secret_dir / "files.tar.zst").write_bytes(data)
    manifest = json.loads((published / "manifest.json").read_bytes())
    manifest["artifacts"][0]["filename"] = "sub/files.tar.zst"
    (published / "manifest.json").write_text(json.dumps(manifest))
    (published / "sub").symlink_to(secret_dir)
    monkeypatch.chdir(published.parent)
    for source in (published, Path(published.name)):
        with pytest.raises(DataError, match="outside"):
            PublishedOutput.open(source).verify()


# -- names that are not UTF-8 ------------------------------------------------------------

NAMES = st.binary(min_size=1, max_size=40).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")
)


@FUZZ
@given(names=st.lists(NAMES, min_size=1, max_size=8, unique=True))
def test_names_that_are_not_utf8_round_trip_byte_exactly(
    tmp_path_factory: pytest.TempPathFactory, names: list[bytes]
) -> None:
    where = tmp_path_factory.mktemp("names")
    source = where / "source"
    (source / "d\udcff").mkdir(parents=True)  # a directory whose name is not UTF-8 either
    for i, name in enumerate(names):
        with open(os.path.join(os.fsencode(source / "d\udcff"), name), "wb") as f:
            f.write(b"%d" % i)
    buffer = io.BytesIO()
    create_tar(buffer, source)
    buffer.seek(0)
    stats = extract_tar(buffer, where / "target")
    assert stats.files == len(names)
    restored = os.fsencode(where / "target" / "d\udcff")
    assert sorted(os.listdir(restored)) == sorted(names)
    for i, name in enumerate(names):
        with open(os.path.join(restored, name), "rb") as f:
            assert f.read() == b"%d" % i


# -- the example agents check the source_metadata they use ----------------------------------

BAD_FS_METADATA = [
    {"files": "many"},
    {"tar_bytes": -1},
    {"directories": 1.5},
    {"symlinks": None},
    {"hardlinks": [1]},
    {"tar_bytes": True},
]


@pytest.mark.parametrize("metadata", BAD_FS_METADATA)
def test_filesystem_example_refuses_wrong_source_metadata(
    published: Path, tmp_path: Path, metadata: dict[str, Any]
) -> None:
    manifest = json.loads((published / "manifest.json").read_bytes())
    manifest["source_metadata"] = metadata
    (published / "manifest.json").write_text(json.dumps(manifest))
    env = job_env(tmp_path / "st", role="restore", BAQUP_RESTORE_SOURCE=str(published))
    code, log = run(FilesystemAgent, {**env, "BAQUP_FS_TARGET": str(tmp_path / "t")})
    assert code == 65, log
    assert "source_metadata" in log
    assert not (tmp_path / "t").exists() or not os.listdir(tmp_path / "t")


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"page_size": 4096},
        {"page_size": "4096", "page_count": 1},
        {"page_size": 1000, "page_count": 1},
        {"page_size": 4096, "page_count": -3},
    ],
)
def test_sqlite_example_refuses_wrong_source_metadata(
    tmp_path: Path, staging_dir: Path, logger: Logger, metadata: dict[str, Any]
) -> None:
    s = Staging(staging_dir, "job-1", logger)
    s.prepare()
    with s.artifact("database.sqlite.zst") as w:
        w.write(b"not read: the metadata is checked first")
    output = s.publish(agent="sqlite", agent_version="1", source_metadata=metadata)
    target = tmp_path / "db" / "app.db"
    env = job_env(tmp_path / "st", role="restore", BAQUP_RESTORE_SOURCE=str(output))
    code, log = run(SqliteAgent, {**env, "BAQUP_SQLITE_DATABASE": str(target)})
    assert code == 65, log
    assert "source_metadata" in log and not target.exists()


@FUZZ
@given(
    value=st.one_of(
        st.integers(max_value=-1),
        # 2.0 is an integer to JSON Schema, and harmless
        st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),
        st.text(max_size=5),
        st.booleans(),
        st.none(),
        st.lists(st.integers(), max_size=2),
    ),
    key=st.sampled_from(["tar_bytes", "files", "directories", "symlinks", "hardlinks"]),
)
def test_checked_metadata_refuses_every_wrong_type_or_range(
    published: Path, value: object, key: str
) -> None:
    manifest = json.loads((published / "manifest.json").read_bytes())
    manifest["source_metadata"] = {key: value}
    (published / "manifest.json").write_text(json.dumps(manifest))
    schema = FS_AGENT.with_name("source-metadata-schema.json")
    with pytest.raises(DataError, match=key):
        PublishedOutput.open(published).checked_metadata(schema)


# -- a staging directory that cannot be used: 73, wherever the spool is ---------------------


@pytest.mark.parametrize("spool_elsewhere", [False, True])
@pytest.mark.parametrize("problem", ["file", "staging-symlink", "spool-symlink", "spool-file"])
def test_unusable_staging_dir_exits_73(tmp_path: Path, problem: str, spool_elsewhere: bool) -> None:
    staging = tmp_path / "staging"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if problem == "file":
        staging.write_text("not a directory")
    else:
        staging.mkdir()
        name = ".staging" if problem.startswith("staging") else ".spool"
        if problem.endswith("symlink"):
            (staging / name).symlink_to(elsewhere)
        else:
            (staging / name).write_text("x")
    with pytest.raises(CantCreateOutput):
        check_staging_dir(staging)
    env = job_env(staging)
    if spool_elsewhere:
        env["BAQUP_SPOOL_DIR"] = str(tmp_path / "spool")
    code, log = run(SampleAgent, env)
    assert code == 73, log
    assert os.listdir(elsewhere) == []
