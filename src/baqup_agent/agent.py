"""Writing an agent: subclass ``Agent``, implement ``backup``/``restore``, call ``run()``.

``run()`` does everything the contract asks around the agent's own work: it loads and
validates the configuration (exit 64 on error, before anything else happens), sets up
the logger, the bus and the heartbeat thread, installs the signal handlers, drives the
lifecycle state machine, prepares staging (backup) or opens and verifies the source
(restore), calls the agent, publishes the output atomically, reports the result exactly
once and exits with the code of the exit-code taxonomy. ``run_job()`` is the same
without the process exit, for tests and the conformance suite.

Exit codes (see docs/writing-an-agent.md and schema/exit-code.json):

* 0: success, result delivered; 75: success, result only spooled;
* 76: ``PartialFailure`` (some artifacts failed, the good ones are published);
* 1 with status ``cancelled``: SIGTERM/SIGINT/controller cancel before publication;
* 64: invalid configuration; others: ``errors.classify`` of the exception (unknown -> 70).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, ClassVar, NoReturn, cast

from baqup_agent.contract import AgentState, ExitCode, HeartbeatIntent, ResultStatus, Role
from baqup_agent.contract.tables import EXIT_CODES
from baqup_agent.errors import (
    Cancelled,
    ConfigError,
    DataError,
    ErrorSummary,
    InternalError,
    PartialFailure,
    classify,
)
from baqup_agent.lifecycle import Cancellation, EarlySignals, StateMachine
from baqup_agent.logger import Logger
from baqup_agent.pid1 import supervise_if_pid1
from baqup_agent.progress import ProgressCounter, ProgressLog

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from baqup_agent.archive import TarStats
    from baqup_agent.artifacts import ArtifactWriter
    from baqup_agent.bus import BusClient
    from baqup_agent.child import ChildOptions, ChildResult, SecretFile
    from baqup_agent.config import Config
    from baqup_agent.contract import Cancel
    from baqup_agent.heartbeat import HeartbeatThread
    from baqup_agent.restore import PublishedOutput
    from baqup_agent.staging import JobLock, Staging

PROGRESS_INTERVAL = 1.0
"""Seconds, at least, between two progress messages sent by ``Context.progress``."""
_ITEM_BATCH = 256  # tar entries counted as progress at once

HEARTBEAT_STOP_TIMEOUT = 10.0
"""Seconds to wait for a heartbeat in flight before the final state and result go out."""


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
        """Run a program as part of the job and wait for it (see ``baqup_agent.child``).

        ``stdout``: a writer (an artifact) its standard output streams into, counted as
        progress (else it is captured in the result); ``stdin``: a reader (an artifact
        being restored) fed to its standard input; ``env``: variables added to its
        environment (``Secret`` values revealed there, ``SecretFile`` values become the
        path of a file holding the secret); ``ok_codes`` (default ``(0,)``);
        ``exit_codes``: exit code -> ``AgentError`` subclass to raise, other codes raise
        ``child.ChildFailed`` (exit 1); ``term_timeout``: seconds between SIGTERM and
        SIGKILL on cancel (default half ``BAQUP_GRACE_PERIOD``); ``stderr_level``: the
        level of its stderr lines in the log (default info); ``name``: its name in logs.
        """
        from baqup_agent.child import run_child

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
        self, fileobj: ArtifactWriter | IO[bytes], root: str | os.PathLike[str]
    ) -> TarStats:
        """Write the tree at ``root`` as a tar stream into ``fileobj`` (an artifact writer,
        or any binary file), never following symlinks; each entry is a checkpoint and
        counts as an item (added to the progress in batches)."""
        from baqup_agent.archive import create_tar

        entries = 0  # counted as progress in batches: per entry it costs what a small file does

        def each_entry() -> None:
            nonlocal entries
            self.checkpoint()
            entries += 1
            if entries == _ITEM_BATCH:
                self.progress(items=entries)
                entries = 0

        # an ArtifactWriter has the part of IO[bytes] that a tar stream writes with
        stream = cast("IO[bytes]", fileobj)
        try:
            return create_tar(stream, root, logger=self.logger, checkpoint=each_entry)
        finally:
            self.progress(items=entries)

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

    def extract_tar(self, fileobj: IO[bytes], target: str | os.PathLike[str]) -> TarStats:
        """Extract a tar stream into ``target`` safely: no entry may escape it (unsafe
        entries raise ``DataError``, exit 65). Each entry is a checkpoint and an item (added
        to the progress in batches)."""
        from baqup_agent.archive import extract_tar

        entries = -1  # the callback runs before each entry and once more at the end

        def each_entry() -> None:
            nonlocal entries
            entries += 1
            if entries == _ITEM_BATCH:  # counted in batches, as in create_tar
                self.progress(items=entries)
                entries = 0
            self.checkpoint()

        try:
            return extract_tar(fileobj, target, logger=self.logger, checkpoint=each_entry)
        finally:
            self.progress(items=max(entries, 0))


@dataclass(frozen=True)
class _Outcome:
    """How the job ended: what the result message says and the exit code."""

    status: ResultStatus
    exit_code: ExitCode
    retryable: bool
    error: str | None = None
    output_path: str | None = None
    artifacts: int = 0
    bytes: int = 0


class _Job:
    """One run of an agent, from the loaded configuration to the exit code."""

    def __init__(
        self,
        agent: Agent,
        config: Config,
        *,
        started: float,
        install_signals: bool,
        restore_signals: bool,
        log_stream: IO[str] | None,
        exit_process: Callable[[int], NoReturn],
        early_signals: Sequence[int] = (),
    ) -> None:
        self.agent = agent
        self.early_signals = early_signals
        self.config = config
        self.settings = settings = config.settings
        self.started = started
        self.role = settings.role
        self.logger = Logger(
            settings.job_id,
            settings.agent_id,
            level=settings.log_level,
            format=settings.log_format,
            stream=log_stream,
        )
        self.install_signals = install_signals
        self.restore_signals = restore_signals
        self.exit_process = exit_process
        self.progress = ProgressCounter()
        self.staging: Staging | None = None
        self.job_lock: JobLock | None = None
        self.outcome: _Outcome | None = None
        self._report_lock = threading.Lock()
        self._reported: bool | None = None  # None until reported; then delivered or not

    def run(self) -> int:
        """Run the job and return its exit code.

        A backup holds the job's lock from before its first bus message until its last
        (contract section 4.7): a duplicate is refused without touching the bus, and a
        rerun of a published job only makes sure its result was delivered.
        """
        if self.role is not Role.BACKUP:
            return self._run()  # restore reruns redo the work: no lock
        from baqup_agent.staging import JobLock

        failed = self._check_staging()
        if failed is not None:
            return failed

        try:
            self.job_lock = JobLock(self.settings.staging_dir, self.settings.job_id)
            self.job_lock.acquire()
        except Exception as exc:  # stderr only: the bus belongs to the run holding it
            summary = classify(exc)
            self.logger.fatal(
                "refused to start: cannot take the job's lock",
                error=summary.message,
                exit_code=summary.exit_code,
            )
            return int(summary.exit_code)
        try:
            if os.path.lexists(self.settings.staging_dir / self.settings.job_id):
                return self._rerun()
            return self._run()
        finally:
            self.job_lock.release()

    def _check_staging(self) -> int | None:
        """73 when the staging directory cannot be used (None when it can): checked before
        the lock and the bus, whose spool may live below it and would fail otherwise with
        another code."""
        from baqup_agent.errors import CantCreateOutput
        from baqup_agent.staging import check_staging_dir

        try:
            check_staging_dir(self.settings.staging_dir)
        except CantCreateOutput as exc:
            self.logger.fatal("cannot use the staging directory", exc=exc, exit_code=exc.exit_code)
            return int(exc.exit_code)
        return None

    def _open_bus(self) -> int | None:
        """Set up ``self.bus``; the exit code when that fails (None when it worked)."""
        from baqup_agent.bus import BusClient
        from baqup_agent.keys import default_spool_dir

        # A restore only writes below the staging directory when the bus is the spool
        # (no Redis) and the spool lives there (the default); a backup checked it already.
        settings = self.settings
        spool_is_bus_in_staging = settings.redis_url is None and settings.spool_dir == (
            default_spool_dir(None, str(settings.staging_dir))
        )
        if self.role is not Role.BACKUP and spool_is_bus_in_staging:
            failed = self._check_staging()
            if failed is not None:
                return failed
        try:
            self.bus = BusClient(self.settings, self.logger)
        except Exception as exc:  # no bus, so no report: the exit code is all there is
            summary = classify(exc)
            _log_failure(self.logger, "could not set up the bus", exc, summary, fatal=True)
            return int(summary.exit_code)
        return None

    def _rerun(self) -> int:
        """A backup whose output is already published: verify it, then deliver the
        earlier run's spool and, only when the bus has none, a result (section 4.7)."""
        from baqup_agent.errors import DataError
        from baqup_agent.restore import PublishedOutput

        output = self.settings.staging_dir / self.settings.job_id
        try:
            published = PublishedOutput.open(output)
            if published.manifest.job_id != self.settings.job_id:
                raise DataError(
                    f"{output} holds the output of job {published.manifest.job_id}, "
                    f"not {self.settings.job_id}"
                )
            published.verify()
        except Exception as exc:
            summary = classify(exc)
            self.logger.fatal(
                "the job's published output does not verify; its recorded result is left alone",
                exc=exc,
                exit_code=summary.exit_code,
                output_path=str(output),
            )
            return int(summary.exit_code)
        failed = self._open_bus()  # replays what an earlier run left in the spool
        if failed is not None:
            return failed
        try:
            recorded = self.bus.has_result()
            if recorded is False:
                artifacts = published.manifest.artifacts
                recorded = self.bus.send_result(
                    ResultStatus.SUCCESS,
                    ExitCode.SUCCESS,
                    False,
                    round(time.monotonic() - self.started, 3),
                    output_path=str(output),
                    artifacts=len(artifacts),
                    bytes=sum(a.size_bytes for a in artifacts),
                )
        finally:
            self.bus.close()  # its last replay may still deliver a spooled result
        delivered = bool(recorded) or self.bus.result_delivered
        code = ExitCode.SUCCESS if delivered else ExitCode.COMPLETED_UNREPORTED
        self.logger.info(
            "job already complete: its output is published and verified; nothing to do",
            output_path=str(output),
            result_delivered=delivered,
            exit_code=code,
        )
        return int(code)

    def _run(self) -> int:
        """A job that does its work: from the first state change to the result."""
        from baqup_agent.heartbeat import HeartbeatThread

        failed = self._open_bus()
        if failed is not None:
            return failed
        self.machine = StateMachine(on_change=self._send_state)
        self.cancellation = Cancellation(
            self.settings.grace_period,
            self.logger,
            on_request=self._on_cancel_request,
            on_force_exit=self._force_exit,
            exit_process=self.exit_process,
        )
        self.heartbeat = HeartbeatThread(
            self.bus,
            self.settings.agent_id,
            self.settings.heartbeat_interval,
            self.logger,
            state=lambda: self.machine.state,
            progress=self.progress.snapshot,
        )
        self.progress_log = ProgressLog(
            self.progress, self.logger, self.settings.progress_log_interval
        )
        # once the heartbeat exists (a request sets its intent); until then the start-up
        # recorder keeps the signals in early_signals
        if self.install_signals:
            self.cancellation.install_signal_handlers()
        if self.early_signals:
            name = signal.Signals(self.early_signals[0]).name
            self.cancellation.request(f"received {name} during start-up")
        try:
            self.bus.on_cancel(self._on_bus_cancel)
            outcome = self._execute()
            self._finish(outcome)
        finally:
            self.heartbeat.stop(HEARTBEAT_STOP_TIMEOUT)
            self.bus.close()  # its last replay may still deliver a spooled result
            self.cancellation.stop()  # from here on, the handlers ignore signals
            if self.restore_signals:
                self.cancellation.restore_signal_handlers()
        code = _exit_code(outcome, self.bus.result_delivered)
        self.logger.info(
            "job finished",
            status=outcome.status,
            exit_code=code,
            duration_seconds=round(time.monotonic() - self.started, 3),
            output_path=outcome.output_path,
        )
        return int(code)

    # -- the job ------------------------------------------------------------------------

    def _execute(self) -> _Outcome:
        """Run the job; return its outcome, whatever happens."""
        try:
            self.machine.announce()  # the first message: initializing
            self.heartbeat.start()
            ctx = self._prepare()
            self.machine.transition(AgentState.RUNNING)
            self.logger.info(
                "job started",
                agent=self.agent.agent_name(),
                agent_version=self.agent.version,
                role=self.role,
            )
            self.progress_log.start()  # stopped by _finish
            self.cancellation.check()  # a cancel during set-up stops the job here
            if self.role is Role.BACKUP:
                self.agent.backup(ctx)
            else:
                ctx.source.verify()  # DataError (65) before the agent writes anything
                self.agent.restore(ctx)
            self.bus.send_progress(self.progress.snapshot(), "done")  # the final counters
            self.machine.transition(AgentState.COMPLETING)
            self.heartbeat.set_intent(HeartbeatIntent.COMPLETING)
            with self.cancellation.commit():
                self.outcome = self._publish(ctx)
            return self.outcome
        except BaseException as exc:  # every failure is reported, whatever its type
            return self._failed(exc)

    def _prepare(self) -> Context:
        """Set up what the role needs, in the initializing state."""
        source: PublishedOutput | None = None
        if self.role is Role.BACKUP:
            from baqup_agent.staging import Staging

            self.staging = Staging(
                self.settings.staging_dir,
                self.settings.job_id,
                self.logger,
                job_lock=self.job_lock,
            )
            self.staging.prepare()
        else:
            from baqup_agent.restore import PublishedOutput

            # a restore has a source: config.json requires it with the role
            assert self.settings.restore_source is not None
            source = PublishedOutput.open(self.settings.restore_source)
        return Context(
            config=self.config,
            logger=self.logger,
            bus=self.bus,
            heartbeat=self.heartbeat,
            progress=self.progress,
            cancellation=self.cancellation,
            staging=self.staging,
            source=source,
            progress_log=self.progress_log,
        )

    def _publish(self, ctx: Context) -> _Outcome:
        """Backup: publish the staged output (the point of no return). Restore: done."""
        snapshot = self.progress.snapshot()
        if self.staging is None:
            return _Outcome(
                ResultStatus.SUCCESS, ExitCode.SUCCESS, False, bytes=snapshot.bytes_done
            )
        status, code, error = ResultStatus.SUCCESS, ExitCode.SUCCESS, None
        staged = self.staging
        if not (staged.artifacts or staged.failures or self.agent.empty_output_valid):
            raise DataError(
                "the backup published no artifact (set empty_output_valid = True on the "
                "agent class if an empty backup is a valid result)"
            )
        try:
            path = self.staging.publish(
                agent=self.agent.agent_name(),
                agent_version=self.agent.version,
                role=self.role,
                source_metadata=ctx.source_metadata or None,
            )
        except PartialFailure as exc:  # raised after the good artifacts were published
            summary = classify(exc)
            status, code, error = ResultStatus.PARTIAL, summary.exit_code, summary.message
            path = self.staging.output_dir
        manifest = self.staging.manifest
        assert manifest is not None  # set by a publication, even a partial one
        return _Outcome(
            status,
            code,
            EXIT_CODES[code].retryable,
            error=error,
            output_path=str(path),
            artifacts=len(manifest.artifacts),
            bytes=sum(a.size_bytes for a in manifest.artifacts),
        )

    def _failed(self, exc: BaseException) -> _Outcome:
        summary = classify(exc)
        if isinstance(exc, (Cancelled, KeyboardInterrupt)):
            status = ResultStatus.CANCELLED
            self.logger.warn("job cancelled", reason=summary.message, exit_code=summary.exit_code)
        else:
            status = ResultStatus.FAILED
            _log_failure(self.logger, "job failed", exc, summary)
        self.outcome = _Outcome(status, summary.exit_code, summary.retryable, summary.message)
        self.heartbeat.set_intent(HeartbeatIntent.FAILING)
        self._discard()
        return self.outcome

    def _discard(self) -> None:
        """Remove the staging directory of a job that will publish nothing."""
        if self.staging is None:
            return
        try:
            self.staging.discard()
        except Exception as exc:  # the next run for the job cleans a leftover up
            self.logger.error("could not discard staging", exc=exc)

    def _finish(self, outcome: _Outcome) -> None:
        """Enter the final state and report the result (once)."""
        self.progress_log.stop()
        self.heartbeat.stop(HEARTBEAT_STOP_TIMEOUT)  # no heartbeat after the result
        self._enter_final(outcome)
        self._report(outcome)

    def _enter_final(self, outcome: _Outcome) -> None:
        """Terminated when the job did its work (published output counts), else failed."""
        done = outcome.status in (ResultStatus.SUCCESS, ResultStatus.PARTIAL)
        state = AgentState.TERMINATED if done else AgentState.FAILED
        try:
            if self.machine.can(state):
                self.machine.transition(state, outcome.error)
        except Exception as exc:  # the result still has to go out
            self.logger.error("could not report the final state", exc=exc)

    def _report(self, outcome: _Outcome) -> bool:
        """Send the result, exactly once per job; whether it reached the controller."""
        with self._report_lock:
            if self._reported is not None:
                return self._reported
            try:
                self._reported = self.bus.send_result(
                    outcome.status,
                    outcome.exit_code,
                    outcome.retryable,
                    round(time.monotonic() - self.started, 3),
                    error=outcome.error,
                    output_path=outcome.output_path,
                    artifacts=outcome.artifacts,
                    bytes=outcome.bytes,
                )
            except Exception as exc:
                self.logger.error("could not report the result", exc=exc)
                self._reported = False
            return self._reported

    # -- callbacks ----------------------------------------------------------------------

    def _send_state(
        self, to_state: AgentState, from_state: AgentState | None, reason: str | None
    ) -> None:
        self.logger.debug("state changed", from_state=from_state, to_state=to_state)
        self.bus.send_state_change(to_state, from_state, reason)

    def _on_bus_cancel(self, message: Cancel) -> None:
        reason = message.reason
        self.cancellation.request(f"controller cancel: {reason}" if reason else "controller cancel")

    def _on_cancel_request(self, reason: str) -> None:
        self.heartbeat.set_intent(HeartbeatIntent.FAILING)

    def _force_exit(self, why: str, may_discard: bool, deadline: float) -> int:
        """The watchdog's exit (grace period over, or a second signal): runs in its thread."""
        outcome = self.outcome
        discard = outcome is None and may_discard
        if outcome is None:
            outcome = _Outcome(
                ResultStatus.CANCELLED,
                Cancelled.exit_code,
                EXIT_CODES[Cancelled.exit_code].retryable,
                f"Cancelled: {self.cancellation.reason or 'cancelled'} ({why})",
            )
        delivered: list[bool] = []

        def report() -> None:
            # Nothing may follow the result: the heartbeat is told to stop, without
            # waiting for a beat in flight (the bus drops anything sent after the result).
            self.heartbeat.stop(0)
            self._enter_final(outcome)
            delivered.append(self._report(outcome))

        # The bus may be slow or held by the job thread: report only within the deadline,
        # while staging is removed here.
        reporter = threading.Thread(target=report, name="baqup-final-report", daemon=True)
        reporter.start()
        if discard:
            self._discard()
        reporter.join(timeout=max(0.0, deadline - time.monotonic()))
        return int(_exit_code(outcome, bool(delivered and delivered[0])))


def _exit_code(outcome: _Outcome, delivered: bool) -> ExitCode:
    """A success whose result could only be spooled ends with 75; anything else as is."""
    if outcome.exit_code == ExitCode.SUCCESS and not delivered:
        return ExitCode.COMPLETED_UNREPORTED
    return outcome.exit_code


def _log_failure(
    logger: Logger, message: str, exc: BaseException, summary: ErrorSummary, *, fatal: bool = False
) -> None:
    """One line with the reason for an expected failure; the traceback only for an
    internal error (70) or when DEBUG lines are written."""
    internal = summary.exit_code == ExitCode.INTERNAL_ERROR
    write = logger.fatal if fatal else logger.error
    write(
        message,
        exc=exc if internal or logger.enabled("DEBUG") else None,
        reason=summary.message,
        exit_code=summary.exit_code,
    )


def _config_error_logger(environ: Mapping[str, str], stream: IO[str] | None) -> Logger:
    """A logger for configuration errors, built from whatever the environment gives."""

    from baqup_agent.config import fallback_identity

    job_id, agent_id, fmt = fallback_identity(environ)
    return Logger(job_id, agent_id, format=fmt, stream=stream)


def run_job(
    agent: Agent | type[Agent],
    *,
    environ: Mapping[str, str] | None = None,
    install_signals: bool = True,
    restore_signals: bool = True,
    log_stream: IO[str] | None = None,
    exit_process: Callable[[int], NoReturn] = os._exit,
    route_python_output: bool = False,
) -> int:
    """Run one job in this process and return its exit code (``run()`` without the exit).

    ``environ`` replaces ``os.environ``; ``install_signals=False`` leaves the process's
    signal handlers alone (they can only be installed from the main thread anyway);
    ``restore_signals=False`` keeps the SDK's handlers, which ignore signals once the
    job is over, instead of restoring the previous ones (``run()``: a SIGTERM while the
    process exits must not kill it with a signal status); ``exit_process`` is what a
    forced exit calls (default ``os._exit``); ``route_python_output`` routes the stdlib
    ``logging`` root, ``warnings`` and the exception hooks through a logger
    (``Logger.route_python_output``; ``run()`` turns it on): from the start, one made
    from the environment, and the job's own logger once it exists.

    When ``environ`` is None (``os.environ`` is read), the agent's secret variables and
    their ``*_FILE`` variables are removed from ``os.environ`` once loaded, unless the
    agent sets ``keep_secrets_in_environ``.
    """
    started = time.monotonic()
    early = EarlySignals()
    if install_signals:
        early.install()
    try:
        with _start_up_routing(route_python_output, environ, log_stream):
            return _load_and_run(
                agent,
                environ=environ,
                started=started,
                early_signals=early.received,
                install_signals=install_signals,
                restore_signals=restore_signals,
                log_stream=log_stream,
                exit_process=exit_process,
                route_python_output=route_python_output,
            )
    finally:
        if restore_signals:
            early.restore()


def _start_up_routing(
    enabled: bool, environ: Mapping[str, str] | None, log_stream: IO[str] | None
) -> contextlib.AbstractContextManager[object]:
    """Route Python's own output from the start (an agent's ``__init__``, loading the
    configuration) through a logger made from what the environment gives; the job's
    own logger takes over once it exists."""
    if not enabled:
        return contextlib.nullcontext()
    env = os.environ if environ is None else environ
    return _config_error_logger(env, log_stream).route_python_output()


def _load_and_run(
    agent: Agent | type[Agent],
    *,
    environ: Mapping[str, str] | None,
    started: float,
    early_signals: Sequence[int],
    install_signals: bool,
    restore_signals: bool,
    log_stream: IO[str] | None,
    exit_process: Callable[[int], NoReturn],
    route_python_output: bool,
) -> int:
    """``run_job`` once start-up signals are being recorded."""
    from baqup_agent.config import load_config, scrub_secrets

    instance = agent() if isinstance(agent, type) else agent
    env: Mapping[str, str] = os.environ if environ is None else environ
    try:
        config = load_config(instance.schema_source(), environ=env)
    except ConfigError as exc:
        logger = _config_error_logger(env, log_stream)
        for problem in exc.problems:
            logger.error(
                "invalid configuration",
                variable=problem.variable,
                problem=problem.message,
                keyword=problem.keyword,
            )
        logger.fatal(str(exc), exit_code=ExitCode.USAGE_CONFIG_ERROR)
        return int(ExitCode.USAGE_CONFIG_ERROR)
    except Exception as exc:  # e.g. an unreadable agent schema: a broken agent
        summary = classify(exc)
        logger = _config_error_logger(env, log_stream)
        _log_failure(logger, "could not load the configuration", exc, summary, fatal=True)
        return int(summary.exit_code)
    if environ is None and not instance.keep_secrets_in_environ:
        scrub_secrets(instance.schema_source(), os.environ)
    job = _Job(
        instance,
        config,
        started=started,
        install_signals=install_signals,
        restore_signals=restore_signals,
        log_stream=log_stream,
        exit_process=exit_process,
        early_signals=early_signals,
    )
    if not route_python_output:
        return job.run()
    with job.logger.route_python_output():
        return job.run()


def run(
    agent: Agent | type[Agent],
    *,
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> NoReturn:
    """Run one job with ``agent`` as configured by the environment, then exit the process
    with the job's exit code."""
    from baqup_agent.cli import UsageParser

    cls = agent if isinstance(agent, type) else type(agent)
    parser = UsageParser(
        prog=cls.agent_name(),
        description=f"baqup agent {cls.agent_name()} {cls.version}: runs one backup or "
        "restore job configured by BAQUP_* environment variables.",
    )
    parser.add_argument("--version", action="version", version=f"{cls.agent_name()} {cls.version}")
    parser.parse_args(argv)  # only --help and --version; a usage error exits 64
    supervise_if_pid1()  # PID 1 of a container: an init forwards signals and reaps
    code = run_job(
        agent, environ=environ, restore_signals=False, route_python_output=cls.route_python_output
    )
    Cancellation.ignore_signals()  # the result is out: a late signal must not change the exit
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)
