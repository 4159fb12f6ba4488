"""Atomic publication (contract section 4): stage in ``.staging/<job_id>/``, rename once.

A job writes its artifacts into ``<staging>/.staging/<job_id>/``; ``publish()`` fsyncs
them, writes ``manifest.json`` last, and renames the directory to
``<staging>/<job_id>/`` in one step, so a reader sees the whole output or nothing.
A failed job's directory is discarded; a crashed job's leftover is removed by the
next run for that job. See docs/output.md for the exact guarantees.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import orjson

from baqup_agent._artifacts import FILE_MODE, ArtifactWriter
from baqup_agent._checksum import DEFAULT_ALGORITHM, file_checksum
from baqup_agent._durable import (
    flock_exclusive,
    fsync_dir,
    rename_noreplace,
    unlock_and_remove,
    write_file,
)
from baqup_agent._errors import (
    CantCreateOutput,
    ConfigError,
    InternalError,
    IOFailure,
    PartialFailure,
    summarize,
)
from baqup_agent._keys import SPOOL_SUBDIR
from baqup_agent._paths import is_artifact_filename, is_job_id
from baqup_agent._redaction import redact
from baqup_agent.contract import Artifact, ChecksumAlgorithm, Compression, Manifest, Role

# the wire layout: job ids cannot start with a dot, so the locks directory never collides
# with one; staged directories are private (contract section 7)
from baqup_agent.contract.wire import LOCKS_SUBDIR as LOCKS_DIRNAME
from baqup_agent.contract.wire import MANIFEST_FILE as MANIFEST_NAME
from baqup_agent.contract.wire import STAGING_DIR_MODE as DIR_MODE
from baqup_agent.contract.wire import STAGING_SUBDIR as STAGING_DIRNAME

if TYPE_CHECKING:
    from baqup_agent._logger import Logger
    from baqup_agent._progress import ProgressCounter


class JobLock:
    """The lock of one job id: an exclusive ``flock`` on ``<staging>/.staging/.locks/<job_id>``.

    Two live runs of one job never both hold it (contract section 4.6); the kernel
    drops it when its holder dies, so a crashed run does not block the next one.
    """

    def __init__(self, staging_dir: str | os.PathLike[str], job_id: str) -> None:
        if not is_job_id(job_id):
            raise ConfigError(f"invalid job id {job_id!r}: not a safe directory name")
        self.job_id = job_id
        self.path = Path(staging_dir) / STAGING_DIRNAME / LOCKS_DIRNAME / job_id
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this process holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock; ``CantCreateOutput`` (73) when another run holds it or the
        directories cannot be used."""
        try:
            self.path.parent.parent.parent.mkdir(parents=True, exist_ok=True)
            _private_dir(self.path.parent.parent)
            _private_dir(self.path.parent)
            self._fd = flock_exclusive(self.path, FILE_MODE)
        except BlockingIOError:
            raise CantCreateOutput(
                f"another run of job {self.job_id} is using its staging"
            ) from None
        except OSError as exc:
            raise CantCreateOutput(f"cannot take the lock {self.path}: {exc}") from exc

    def release(self) -> None:
        """Give the lock back (the lock file is removed)."""
        if self._fd is not None:
            unlock_and_remove(self.path, self._fd)
            self._fd = None


class Staging:
    """The staging area of one job: prepare, write artifacts, then publish or discard.

    ``work_dir`` is ``<staging>/.staging/<job_id>/``, ``output_dir`` is
    ``<staging>/<job_id>/``. A lock file (``.staging/.locks/<job_id>``, held from
    ``prepare()`` until publish or discard) keeps two live runs of one job apart; a
    ``JobLock`` passed in is used instead, and stays held until its owner releases it.
    ``discard()`` may be called from another thread (a forced exit): it waits for a
    publication in progress and never removes a published output.
    """

    def __init__(
        self,
        staging_dir: str | os.PathLike[str],
        job_id: str,
        logger: Logger,
        *,
        job_lock: JobLock | None = None,
    ) -> None:
        self._job_lock = job_lock or JobLock(staging_dir, job_id)  # checks the job id
        self._owns_lock = job_lock is None
        self.root = Path(staging_dir)
        self.job_id = job_id
        self.logger = logger
        self.staging_root = self.root / STAGING_DIRNAME
        self.work_dir = self.staging_root / job_id
        self.output_dir = self.root / job_id
        self.artifacts: list[Artifact] = []
        self.failures: list[tuple[str, str]] = []
        self.manifest: Manifest | None = None
        self._errors: list[BaseException | None] = []  # parallel to failures
        self._writers: dict[str, ArtifactWriter] = {}
        self._subdirs: set[Path] = set()
        self._lock = threading.RLock()
        self._state = "new"  # -> prepared -> published | discarded

    # -- set-up ---------------------------------------------------------------------------

    def prepare(self) -> Path:
        """Create an empty, private ``work_dir`` and return it.

        Raises ``CantCreateOutput`` (73) when ``output_dir`` already exists (a job id
        publishes once), when another live run of the job holds the lock, or when
        ``check_staging_dir`` refuses the staging directory. A leftover ``work_dir`` of
        a crashed run is removed first, without following symlinks.
        """
        with self._lock:
            if self._state != "new":
                raise InternalError(f"staging of job {self.job_id} was already prepared")
            if os.path.lexists(self.output_dir):
                raise CantCreateOutput(f"output {self.output_dir} already exists")
            try:
                check_staging_dir(self.root)
                if not self._job_lock.held:
                    self._job_lock.acquire()
                if os.path.lexists(self.work_dir):
                    self.logger.warn(
                        "removing leftover staging directory of a previous run",
                        path=str(self.work_dir),
                    )
                    _remove(self.work_dir)
                os.mkdir(self.work_dir, DIR_MODE)
                os.chmod(self.work_dir, DIR_MODE)  # whatever the umask
            except CantCreateOutput:
                self._release_lock()
                raise
            except OSError as exc:
                self._release_lock()
                raise CantCreateOutput(f"cannot prepare staging {self.work_dir}: {exc}") from exc
            self._state = "prepared"
            self.logger.debug("staging prepared", path=str(self.work_dir))
            return self.work_dir

    # -- artifacts ------------------------------------------------------------------------

    def artifact(
        self,
        filename: str,
        *,
        compression: str = Compression.ZSTD.value,
        algorithm: str = DEFAULT_ALGORITHM,
        level: int | None = None,
        threads: int = 0,
        progress: ProgressCounter | None = None,
    ) -> ArtifactWriter:
        """A writer for the artifact ``filename``; the Artifact is registered on close.

        ``filename`` is relative to the output ('/' makes subdirectories). If the writer
        is aborted (an exception in its ``with`` block) nothing is registered: call
        ``fail_artifact`` to publish the others anyway, or let the job fail.
        """
        with self._lock:
            path = self._new_path(filename)
            writer = ArtifactWriter(
                path,
                filename,
                compression=compression,
                algorithm=algorithm,
                level=level,
                threads=threads,
                progress=progress,
                on_close=self._register,
            )
            self._writers[filename] = writer
            return writer

    def add_file(
        self,
        filename: str,
        *,
        algorithm: str = DEFAULT_ALGORITHM,
        compression: str | None = None,
    ) -> Artifact:
        """Register a file the agent wrote into ``work_dir`` itself (read once to checksum).

        The file must be a regular file (not a symlink); it is made private (0o600) and
        fsynced. ``compression`` records how its bytes are compressed, if they are.
        """
        with self._lock:
            self._check_prepared()
            self._check_new_name(filename)
            path = self.work_dir / filename
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as exc:
                raise CantCreateOutput(f"cannot add artifact {filename}: {exc}") from exc
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise CantCreateOutput(f"cannot add artifact {filename}: not a regular file")
                os.fchmod(fd, FILE_MODE)
                os.fsync(fd)
            finally:
                os.close(fd)
            size, digest = file_checksum(path, algorithm)
            artifact = Artifact(
                filename=filename,
                size_bytes=size,
                checksum_algorithm=ChecksumAlgorithm(algorithm),
                checksum_value=digest,
                compression=Compression(compression) if compression else None,
            )
            self._register(artifact)
            return artifact

    def fail_artifact(self, filename: str, error: BaseException | str) -> None:
        """Record that ``filename`` failed: its file is removed and it is not published.

        With at least one good artifact, ``publish()`` then publishes the good ones and
        raises ``PartialFailure`` (76).
        """
        with self._lock:
            self._check_prepared()
            writer = self._writers.pop(filename, None)
            if writer is not None:
                writer.abort()
            self.artifacts = [a for a in self.artifacts if a.filename != filename]
            if is_artifact_filename(filename):
                (self.work_dir / filename).unlink(missing_ok=True)
            message = summarize(error) if isinstance(error, BaseException) else redact(error)
            self.failures.append((filename, message))
            self._errors.append(error if isinstance(error, BaseException) else None)
            self.logger.error("artifact failed", artifact=filename, error=message)

    # -- the end: publish or discard --------------------------------------------------------

    def publish(
        self,
        *,
        agent: str,
        agent_version: str,
        role: Role | str = Role.BACKUP,
        source_metadata: Mapping[str, Any] | None = None,
        adopt_unregistered: bool = False,
    ) -> Path:
        """Publish the good artifacts atomically and return ``output_dir``.

        Steps: check every writer was closed (or reported with ``fail_artifact``);
        remove (or, with ``adopt_unregistered``, register) files that are not
        artifacts; fsync subdirectories; write ``manifest.json`` last and fsync it and
        ``work_dir``; rename ``work_dir`` to ``output_dir`` (refusing to replace
        anything); fsync both parents.

        Raises ``PartialFailure`` (76) *after* publishing when failures were recorded
        and at least one artifact is good. When artifacts failed and none is good,
        nothing is published: the staging is discarded and the first failure's
        exception is raised (``IOFailure`` when it was recorded as text). Other errors
        raise ``CantCreateOutput`` (73) and leave the staging for ``discard()``.
        """
        with self._lock:
            self._check_prepared()
            if self._writers:
                # An aborted writer the agent did not report would silently be missing.
                raise InternalError(
                    "artifacts not finished before publish: "
                    + ", ".join(
                        f"{name} ({'aborted without fail_artifact' if w.closed else 'open'})"
                        for name, w in sorted(self._writers.items())
                    )
                )
            if self.failures and not self.artifacts:
                self.discard()
                first = self._errors[0]
                if first is None:
                    raise IOFailure(f"every artifact failed: {self._failure_text()}")
                raise first
            try:
                self._sweep(adopt_unregistered)
                manifest = self._manifest(agent, agent_version, role, source_metadata)
                for subdir in sorted(self._subdirs, key=lambda p: -len(p.parts)):
                    fsync_dir(subdir)
                write_file(self.work_dir / MANIFEST_NAME, _manifest_json(manifest), FILE_MODE)
                fsync_dir(self.work_dir)
                rename_noreplace(self.work_dir, self.output_dir)
            except OSError as exc:
                raise CantCreateOutput(f"cannot publish {self.output_dir}: {exc}") from exc
            self._state = "published"
            self.manifest = manifest
            self._release_lock()
            try:  # the rename is durable once both parents' entries are on disk
                fsync_dir(self.root)
                fsync_dir(self.staging_root)
            except OSError as exc:  # visible already: report, do not pretend it failed
                self.logger.error("could not fsync the output's parent", exc=exc)
            self.logger.info(
                "output published",
                path=str(self.output_dir),
                artifacts=len(manifest.artifacts),
                bytes=sum(a.size_bytes for a in manifest.artifacts),
                failed=len(self.failures),
            )
            if self.failures:
                raise PartialFailure(
                    f"{len(self.failures)} of {len(self.failures) + len(self.artifacts)} "
                    f"artifacts failed, the others were published: {self._failure_text()}"
                )
            return self.output_dir

    def discard(self) -> None:
        """Remove ``work_dir``: nothing is published. Idempotent, never touches a
        published output; safe to call from another thread."""
        with self._lock:
            if self._state in ("published", "discarded"):
                return
            for writer in self._writers.values():
                writer.abort()
            self._writers.clear()
            try:
                if self._state == "prepared" and os.path.lexists(self.work_dir):
                    _remove(self.work_dir)
            finally:
                self._state = "discarded"
                self._release_lock()
            self.logger.debug("staging discarded", path=str(self.work_dir))

    # -- internals --------------------------------------------------------------------------

    def _check_prepared(self) -> None:
        if self._state != "prepared":
            raise InternalError(f"staging of job {self.job_id} is {self._state}, not prepared")

    def _check_new_name(self, filename: str) -> None:
        if not is_artifact_filename(filename) or filename == MANIFEST_NAME:
            raise ValueError(f"invalid artifact filename {filename!r}")
        if filename in self._writers or any(a.filename == filename for a in self.artifacts):
            raise ValueError(f"artifact {filename!r} was already written")

    def _new_path(self, filename: str) -> Path:
        """Check ``filename`` and create its private parent directories."""
        self._check_prepared()
        self._check_new_name(filename)
        parent = self.work_dir
        for part in filename.split("/")[:-1]:
            parent = parent / part
            if parent not in self._subdirs:
                os.mkdir(parent, DIR_MODE)
                os.chmod(parent, DIR_MODE)
                self._subdirs.add(parent)
        return self.work_dir / filename

    def _register(self, artifact: Artifact) -> None:
        with self._lock:
            self._writers.pop(artifact.filename, None)
            self.artifacts.append(artifact)
            self.logger.debug(
                "artifact written",
                artifact=artifact.filename,
                size_bytes=artifact.size_bytes,
                checksum=f"{artifact.checksum_algorithm.value}:{artifact.checksum_value}",
            )

    def _sweep(self, adopt: bool) -> None:
        """Remove (or adopt) every entry of ``work_dir`` that is not an artifact."""
        known = {a.filename for a in self.artifacts}
        for dirpath, dirnames, filenames in os.walk(self.work_dir, topdown=False):
            for name in [*filenames, *(d for d in dirnames if os.path.islink(Path(dirpath, d)))]:
                path = Path(dirpath, name)
                relative = path.relative_to(self.work_dir).as_posix()
                if relative in known:
                    continue
                if adopt and path.is_file() and not path.is_symlink():
                    self.add_file(relative)
                    continue
                self.logger.warn("removing a file that is not an artifact", file=relative)
                path.unlink()
            if Path(dirpath) != self.work_dir and not os.listdir(dirpath):
                os.rmdir(dirpath)
                self._subdirs.discard(Path(dirpath))
            elif adopt:
                self._subdirs.add(Path(dirpath))

    def _manifest(
        self,
        agent: str,
        agent_version: str,
        role: Role | str,
        source_metadata: Mapping[str, Any] | None,
    ) -> Manifest:
        metadata = None
        if source_metadata is not None:
            # Through JSON and the redactor: Secret objects and known secret values never
            # reach the manifest, and non-JSON values fail here, not in a reader.
            text = orjson.dumps(dict(source_metadata), default=str).decode()
            metadata = orjson.loads(redact(text))
        return Manifest(
            version=get_args(Manifest.model_fields["version"].annotation)[0],  # the schema's const
            job_id=self.job_id,
            agent=agent,
            agent_version=agent_version,
            role=Role(role),
            created_at=datetime.now(timezone.utc),
            artifacts=list(self.artifacts),
            source_metadata=metadata,
        )

    def _failure_text(self) -> str:
        return "; ".join(f"{name}: {message}" for name, message in self.failures)

    def _release_lock(self) -> None:
        if self._owns_lock:
            self._job_lock.release()


@contextmanager
def atomic_write(
    staging_dir: str | os.PathLike[str],
    job_id: str,
    logger: Logger,
    *,
    agent: str = "baqup-agent",
    agent_version: str = "0",
    role: Role | str = Role.BACKUP,
    source_metadata: Mapping[str, Any] | None = None,
) -> Iterator[Staging]:
    """The preview's atomic write pattern: a prepared ``Staging`` for a ``with`` block.

    A clean exit publishes (files written directly into ``staging.work_dir`` are
    adopted as artifacts, uncompressed, sha256); an exception discards and is
    re-raised.
    """
    staging = Staging(staging_dir, job_id, logger)
    staging.prepare()
    try:
        yield staging
    except BaseException:
        staging.discard()
        raise
    staging.publish(
        agent=agent,
        agent_version=agent_version,
        role=role,
        source_metadata=source_metadata,
        adopt_unregistered=True,
    )


def _manifest_json(manifest: Manifest) -> bytes:
    return manifest.model_dump_json(exclude_none=True, indent=2).encode() + b"\n"


def check_staging_dir(staging_dir: str | os.PathLike[str]) -> None:
    """Raise ``CantCreateOutput`` (73) unless ``staging_dir`` can hold outputs.

    Checked before anything is written (the bus's spool may live below it, and would
    otherwise fail first with another code): the directory, or its nearest existing
    ancestor when it is still to be created, is a directory this process may write
    into; ``.staging`` and ``.spool`` below it, when present, are real directories,
    not symlinks (a symlink there would send staged data or messages elsewhere).
    """
    root = Path(staging_dir)
    existing = root
    while not os.path.lexists(existing) and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():  # follows a symlink: the configured root itself may be one
        raise CantCreateOutput(f"staging directory {root}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CantCreateOutput(f"staging directory {root}: {existing} is not writable")
    for name in (STAGING_DIRNAME, SPOOL_SUBDIR):
        try:
            mode = os.lstat(root / name).st_mode
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise CantCreateOutput(f"staging directory {root}: {exc}") from None
        if not stat.S_ISDIR(mode):
            what = "a symlink, " if stat.S_ISLNK(mode) else ""
            raise CantCreateOutput(f"{root / name} is {what}not a directory")


def _private_dir(path: Path) -> None:
    """Make sure ``path`` is a real directory (created 0o700); refuse a symlink."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            raise CantCreateOutput(f"{path} is not a directory") from None


def _remove(path: Path) -> None:
    """Remove ``path`` without following any symlink (a symlink itself is unlinked)."""
    if stat.S_ISDIR(os.lstat(path).st_mode):
        shutil.rmtree(path)  # fd-based on Linux: does not follow symlinks inside
    else:
        os.unlink(path)
