"""The job's orchestration: one run of an agent, from the environment to the exit code.

``run_job()`` loads and validates the configuration (exit 64 on error, before anything
else happens), sets up the logger, the bus and the heartbeat thread, installs the
signal handlers, takes the job's lock (backup: a duplicate is refused, a rerun of a
published job only re-delivers its result), drives the lifecycle state machine,
prepares staging (backup) or opens and verifies the source (restore), calls the agent
with a ``Context``, publishes the output atomically, reports the result exactly once
and returns the code of the exit-code taxonomy. The author API (``Agent``, ``Context``,
``run()``) is ``_agent.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, NoReturn

from baqup_agent._errors import (
    Cancelled,
    ConfigError,
    DataError,
    ErrorSummary,
    PartialFailure,
    classify,
)
from baqup_agent._lifecycle import Cancellation, EarlySignals, StateMachine
from baqup_agent._logger import Logger
from baqup_agent._progress import ProgressCounter, ProgressLog
from baqup_agent._restore import PublishedOutput, start_early_checksums, stop_early_checksums
from baqup_agent.contract import AgentState, ExitCode, HeartbeatIntent, ResultStatus, Role
from baqup_agent.contract.tables import EXIT_CODES

if TYPE_CHECKING:
    from baqup_agent._agent import Agent, Context
    from baqup_agent._config import Config
    from baqup_agent._staging import JobLock, Staging
    from baqup_agent.contract import Cancel

HEARTBEAT_STOP_TIMEOUT = 10.0
"""Seconds to wait for a heartbeat in flight before the final state and result go out."""


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
        from baqup_agent._staging import JobLock

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
        from baqup_agent._errors import CantCreateOutput
        from baqup_agent._staging import check_staging_dir

        try:
            check_staging_dir(self.settings.staging_dir)
        except CantCreateOutput as exc:
            self.logger.fatal("cannot use the staging directory", exc=exc, exit_code=exc.exit_code)
            return int(exc.exit_code)
        return None

    def _open_bus(self) -> int | None:
        """Set up ``self.bus``; the exit code when that fails (None when it worked)."""
        from baqup_agent._bus import BusClient
        from baqup_agent._keys import default_spool_dir

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
        from baqup_agent._errors import DataError

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
        from baqup_agent._heartbeat import HeartbeatThread

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
            from baqup_agent._staging import Staging

            self.staging = Staging(
                self.settings.staging_dir,
                self.settings.job_id,
                self.logger,
                job_lock=self.job_lock,
            )
            self.staging.prepare()
        else:
            # a restore has a source: config.json requires it with the role
            assert self.settings.restore_source is not None
            source = PublishedOutput.open(self.settings.restore_source)
        # the author API's object, made by the agent's own class: no import up a layer
        return self.agent._new_context(
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

    from baqup_agent._config import fallback_identity

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
    start_early_checksums(os.environ if environ is None else environ)
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
        stop_early_checksums()
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
    from baqup_agent._config import load_config, scrub_secrets

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
