"""Writing an agent (the author API): subclass ``Agent``, implement ``backup``/``restore``
with the ``Context`` they receive, call ``run()``.

``run()`` does everything the contract asks around the agent's own work through
``run_job()`` (the job's orchestration, ``_job.py``): configuration (exit 64 on error,
before anything else happens), logger, bus, heartbeats, signals, lifecycle, staging or
the verified source, atomic publication, the result reported exactly once; then it
exits with the code of the exit-code taxonomy. ``run_job()`` is the same without the
process exit, for tests and the conformance suite.

Exit codes (see docs/writing-an-agent.md and schema/exit-code.json):

* 0: success, result delivered; 75: success, result only spooled;
* 76: ``PartialFailure`` (some artifacts failed, the good ones are published);
* 1 with status ``cancelled``: SIGTERM/SIGINT/controller cancel before publication;
* 64: invalid configuration; others: ``errors.classify`` of the exception (unknown -> 70).
"""

from __future__ import annotations

import gc
import inspect
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, ClassVar, NoReturn

from baqup_agent._errors import (
    InternalError,
)
from baqup_agent._job import run_job
from baqup_agent._lifecycle import Cancellation
from baqup_agent._logger import Logger
from baqup_agent._pid1 import supervise_if_pid1
from baqup_agent._progress import ProgressCounter, ProgressLog
from baqup_agent.contract import HeartbeatIntent

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer
    from typing_extensions import Unpack

    from baqup_agent._archive import TarStats
    from baqup_agent._artifacts import ArtifactWriter, ByteSink, ByteSource
    from baqup_agent._bus import BusClient
    from baqup_agent._child import ChildOptions, ChildResult, SecretFile
    from baqup_agent._config import Config
    from baqup_agent._heartbeat import HeartbeatThread
    from baqup_agent._restore import PublishedOutput
    from baqup_agent._staging import Staging

PROGRESS_INTERVAL = 1.0
"""Seconds, at least, between two progress messages sent by ``Context.progress``."""
_ITEM_BATCH = 256  # tar entries counted as progress at once


class Agent:
    """Base class of an agent: declare ``name``, ``version``, ``config_schema``; override
    ``backup`` and/or ``restore``.

    ``config_schema`` is the path of the agent's ``agent-schema.json`` (its own
    variables only; the base contract is merged in), or the schema itself as a
    mapping; a relative path is taken from the directory of the file of the class
    that declares it (a subclass of an agent keeps its parent's schema). ``None``
    means the base contract alone.

    Class attributes that change what ``run()`` does (see docs/writing-an-agent.md):
    ``empty_output_valid`` lets a backup publish no artifact (otherwise that fails with
    65); ``route_python_output = False`` leaves the stdlib ``logging`` root,
    ``warnings`` and the exception hooks alone; ``keep_secrets_in_environ = True``
    leaves secret variables (and their ``*_FILE``) in ``os.environ`` for child
    processes to inherit.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0.0.0"
    config_schema: ClassVar[str | os.PathLike[str] | Mapping[str, Any] | None] = None
    empty_output_valid: ClassVar[bool] = False
    route_python_output: ClassVar[bool] = True
    keep_secrets_in_environ: ClassVar[bool] = False

    def _new_context(self, **parts: Any) -> Context:
        """The Context this agent's methods receive; the job (``_job.py``, a lower layer)
        calls it with the parts it set up, so that it never imports this module."""
        return Context(**parts)

    def backup(self, ctx: Context) -> None:
        """Write the backup's artifacts with ``ctx.artifact(...)``."""
        raise NotImplementedError(f"{self.agent_name()} does not implement backup")

    def restore(self, ctx: Context) -> None:
        """Restore from ``ctx.source`` (already verified) into the agent's target."""
        raise NotImplementedError(f"{self.agent_name()} does not implement restore")

    @classmethod
    def agent_name(cls) -> str:
        """``name``, or the class name when the subclass did not set one."""
        return cls.name or cls.__name__

    @classmethod
    def schema_path(cls) -> Path | None:
        """The resolved path of ``config_schema`` (None when it is a mapping or None).

        A relative path is taken from the directory of the file of the class that
        declares ``config_schema``, whichever subclass runs.
        """
        schema = cls.config_schema
        if schema is None or isinstance(schema, Mapping):
            return None
        path = Path(schema)
        if not path.is_absolute():
            owner = next(c for c in cls.__mro__ if "config_schema" in vars(c))
            path = Path(inspect.getfile(owner)).resolve().parent / path
        return path

    @classmethod
    def schema_source(cls) -> Path | Mapping[str, Any] | None:
        """What ``load_config`` gets: the resolved path, the mapping, or None."""
        schema = cls.config_schema
        return schema if isinstance(schema, Mapping) else cls.schema_path()

    @classmethod
    def main(cls, argv: Sequence[str] | None = None) -> NoReturn:
        """Run one job with this agent and exit: ``if __name__ == "__main__": MyAgent.main()``."""
        run(cls, argv=argv)


class _CountedSink:
    """A ``ByteSink`` that counts the bytes written through it."""

    def __init__(self, sink: ByteSink) -> None:
        self._sink = sink
        self.bytes = 0

    def write(self, data: ReadableBuffer, /) -> object:
        self.bytes += memoryview(data).nbytes
        return self._sink.write(data)


class _Tracked:
    """A binary reader that counts what it reads as progress and checks for cancellation."""

    def __init__(self, raw: IO[bytes], ctx: Context) -> None:
        self._raw = raw
        self._ctx = ctx

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._ctx.progress(bytes=len(data))
        self._ctx.checkpoint()
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        n = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        count = int(n or 0)
        self._ctx.progress(bytes=count)
        self._ctx.checkpoint()
        return count

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> _Tracked:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Context:
    """What ``backup(ctx)`` and ``restore(ctx)`` get: config, logger, progress,
    cancellation, heartbeat intent, artifact writers (backup) and the verified source
    (restore)."""

    def __init__(
        self,
        *,
        config: Config,
        logger: Logger,
        bus: BusClient,
        heartbeat: HeartbeatThread,
        progress: ProgressCounter,
        cancellation: Cancellation,
        staging: Staging | None = None,
        source: PublishedOutput | None = None,
        progress_log: ProgressLog | None = None,
    ) -> None:
        self.config = config
        """The validated configuration (base contract + the agent's schema); secrets are
        ``Secret`` objects."""
        self.logger = logger
        self.role = config.role
        self.job_id = config.job_id
        self.agent_id = config.agent_id
        self.source_metadata: dict[str, Any] = {}
        """Backup: free-form facts about the source, written into the manifest."""
        self._bus = bus
        self._heartbeat = heartbeat
        self._progress = progress
        self._cancellation = cancellation
        self._staging = staging
        self._source = source
        self._progress_log = progress_log
        self._last_progress_message = 0.0

    # -- progress and liveness --------------------------------------------------------

    def progress(self, *, bytes: int = 0, items: int = 0, message: str | None = None) -> None:
        """Count ``bytes`` and ``items`` as done.

        Heartbeats carry the counters; a progress message is sent as well when
        ``message`` is given, or at most once per ``PROGRESS_INTERVAL`` seconds. The
        log's progress lines (``BAQUP_PROGRESS_LOG_INTERVAL``) show the last message.
        """
        self._progress.add(bytes=bytes, items=items)
        if message is not None and self._progress_log is not None:
            self._progress_log.note(message)
        now = time.monotonic()
        if message is not None or now - self._last_progress_message >= PROGRESS_INTERVAL:
            self._last_progress_message = now
            self._bus.send_progress(self._progress.snapshot(), message)

    def set_totals(self, *, bytes: int | None = None, items: int | None = None) -> None:
        """Declare the expected totals (None leaves one unchanged)."""
        self._progress.set_totals(bytes=bytes, items=items)

    def heartbeat_intent(
        self, intent: HeartbeatIntent | str, extend_seconds: float | None = None
    ) -> None:
        """Tell the controller what comes next, e.g. ``("extend", 600)`` for a long step."""
        self._heartbeat.set_intent(HeartbeatIntent(intent), extend_seconds)

    @property
    def cancelled(self) -> bool:
        """Whether the job was asked to stop (SIGTERM, SIGINT or a controller cancel)."""
        return self._cancellation.requested and not self._cancellation.committed

    def checkpoint(self) -> None:
        """Raise ``errors.Cancelled`` when the job was asked to stop; call it often."""
        self._cancellation.check()

    def track(self, fileobj: IO[bytes]) -> BinaryIO:
        """Wrap a binary reader (``open(path, "rb")``, ``Popen(...).stdout``, an artifact)
        so that every read counts as progress and is a checkpoint."""
        return _Tracked(fileobj, self)  # type: ignore[return-value]

    def run_child(
        self,
        argv: Sequence[str | os.PathLike[str] | SecretFile],
        **options: Unpack[ChildOptions],
    ) -> ChildResult:
        """Run a program as part of the job and wait for it (docs/writing-an-agent.md).

        ``stdout``: a writer (an artifact) its standard output streams into, counted as
        progress (else it is captured in the result); ``stdin``: a reader (an artifact
        being restored) fed to its standard input; ``env``: variables added to its
        environment (``Secret`` values revealed there, ``SecretFile`` values become the
        path of a file holding the secret); ``ok_codes`` (default ``(0,)``);
        ``exit_codes``: exit code -> ``AgentError`` subclass to raise, other codes raise
        ``ChildFailed`` (exit 1); ``term_timeout``: seconds between SIGTERM and
        SIGKILL on cancel (default half ``BAQUP_GRACE_PERIOD``); ``stderr_level``: the
        level of its stderr lines in the log (default info); ``name``: its name in logs.
        """
        from baqup_agent._child import run_child

        return run_child(self, self._cancellation, argv, **options)

    # -- backup -----------------------------------------------------------------------

    @property
    def staging(self) -> Staging:
        """The job's staging area (backup only)."""
        if self._staging is None:
            raise InternalError("staging is only available to backup jobs")
        return self._staging

    @property
    def work_dir(self) -> Path:
        """Backup: the job's staging directory, for files the agent writes before it adds
        them as artifacts (it is discarded when the job fails)."""
        return self.staging.work_dir

    def artifact(
        self,
        filename: str,
        *,
        compression: str = "zstd",
        algorithm: str | None = None,
        level: int | None = None,
        threads: int = 0,
        count_progress: bool = False,
    ) -> ArtifactWriter:
        """A writer for one artifact: bytes stream to disk, compressed and checksummed in
        one pass. Use it as a context manager (or call ``close()``); ``algorithm``
        defaults to ``BAQUP_CHECKSUM_ALGORITHM``; ``threads=-1`` uses every core;
        ``count_progress`` counts the bytes written in (before compression) as progress.
        """
        return self.staging.artifact(
            filename,
            compression=compression,
            algorithm=algorithm or self.config.settings.checksum_algorithm,
            level=level,
            threads=threads,
            progress=self._progress if count_progress else None,
        )

    def create_tar(
        self, fileobj: ByteSink, root: str | os.PathLike[str], *, totals: bool = False
    ) -> TarStats:
        """Write the tree at ``root`` as a tar stream into ``fileobj`` (an artifact writer,
        or any binary file), never following symlinks; each entry is a checkpoint and
        counts as an item (added to the progress in batches).

        ``totals``: also count the tree (entries, and the bytes of its tar stream) in a
        child process, on another core while the archive is written, and set them as
        the progress totals once known: a percentage without a walk before the work
        (docs/output.md). Once the archive is written the totals are what it holds,
        exact, child or no child (one that cannot start or fails gives none before)."""
        from baqup_agent._archive import create_tar
        from baqup_agent._tar_size import TreeCount

        count: TreeCount | None = None
        if totals:
            try:
                count = TreeCount(root)
            except OSError as exc:
                self.logger.debug("no progress totals: cannot count the tree", error=str(exc))
        counted = _CountedSink(fileobj) if totals else None
        # counted as progress in batches: per entry it costs what a small file does
        entries = done = 0
        check = self._cancellation.check  # self.checkpoint, a call less per entry

        def each_entry() -> None:
            nonlocal entries, done
            check()
            entries += 1
            if entries == _ITEM_BATCH:
                self.progress(items=entries)
                done += entries
                entries = 0
                found = count.poll() if count is not None else None
                if found is not None:
                    self.set_totals(items=found[0], bytes=found[1])

        try:
            stats = create_tar(counted or fileobj, root, logger=self.logger, checkpoint=each_entry)
            if counted is not None:  # exact now, whether or not the child was done
                self.set_totals(items=done + entries, bytes=counted.bytes)
            return stats
        finally:
            self.progress(items=entries)
            if count is not None:
                count.close()

    def fail_artifact(self, filename: str, error: BaseException | str) -> None:
        """Record that one artifact failed: the others are still published, exit 76."""
        self.staging.fail_artifact(filename, error)

    # -- restore ----------------------------------------------------------------------

    @property
    def source(self) -> PublishedOutput:
        """Restore: the published output named by ``BAQUP_RESTORE_SOURCE``; its manifest
        and every checksum were verified before ``restore()`` was called."""
        if self._source is None:
            raise InternalError("the restore source is only available to restore jobs")
        return self._source

    def open_artifact(self, filename: str) -> BinaryIO:
        """Restore: a decompressing reader of one artifact of the source, tracked as
        progress and checkpoints."""
        return self.track(self.source.open_artifact(filename))

    def extract_tar(self, fileobj: ByteSource, target: str | os.PathLike[str]) -> TarStats:
        """Extract a tar stream into ``target`` safely: no entry may escape it (unsafe
        entries raise ``DataError``, exit 65). Each entry is a checkpoint and an item (added
        to the progress in batches)."""
        from baqup_agent._archive import extract_tar

        entries = -1  # the callback runs before each entry and once more at the end
        check = self._cancellation.check  # as in create_tar

        def each_entry() -> None:
            nonlocal entries
            entries += 1
            if entries == _ITEM_BATCH:  # counted in batches, as in create_tar
                self.progress(items=entries)
                entries = 0
            check()

        try:
            return extract_tar(fileobj, target, logger=self.logger, checkpoint=each_entry)
        finally:
            self.progress(items=max(entries, 0))


def run(
    agent: Agent | type[Agent],
    *,
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> NoReturn:
    """Run one job with ``agent`` as configured by the environment, then exit the process
    with the job's exit code."""
    cls = agent if isinstance(agent, type) else type(agent)
    args = sys.argv[1:] if argv is None else argv
    if args:  # only --help and --version exist: a job has no arguments, argparse stays unloaded
        from baqup_agent._usage import UsageParser

        parser = UsageParser(
            prog=cls.agent_name(),
            description=f"baqup agent {cls.agent_name()} {cls.version}: runs one backup or "
            "restore job configured by BAQUP_* environment variables.",
        )
        version = f"{cls.agent_name()} {cls.version}"
        parser.add_argument("--version", action="version", version=version)
        parser.parse_args(args)  # a usage error exits 64
    supervise_if_pid1()  # PID 1 of a container: an init forwards signals and reaps
    # This process ends with the job: what exists now (the imported modules, the
    # contract's models) lives until then, so the collector need not walk it again.
    gc.freeze()
    code = run_job(
        agent, environ=environ, restore_signals=False, route_python_output=cls.route_python_output
    )
    Cancellation.ignore_signals()  # the result is out: a late signal must not change the exit
    sys.stdout.flush()
    sys.stderr.flush()
    gc.freeze()  # the interpreter's shutdown skips collecting what the exit drops anyway
    sys.exit(code)
