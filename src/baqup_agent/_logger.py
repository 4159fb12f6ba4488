"""Structured logging (contract section 6).

``Logger`` writes one JSON object per line (or a readable ``text`` line) to standard
error by default, flushed per line because containers die abruptly. Each JSON line
holds the required fields of ``schema/log-record.json`` (``timestamp`` RFC 3339 UTC
with ``Z``, ``level`` name, ``message``, ``job_id``, ``agent_id``) followed by the
structured fields of the call at top level; a field named like a reserved one is
written as ``extra_<name>`` so it can never overwrite it. Exceptions become
``{"type", "message", "stack"}``.

Every secret known to the redactor is removed wherever it appears (message, fields,
exception text and stack), raw, JSON-escaped or URL-encoded. The hot path pays for
that with one regex search of the finished line, and only when secrets are
registered; a line that matches is rebuilt from its parts with every string
redacted, so redaction never breaks the JSON nor touches ``timestamp`` and ``level``.

``Logger.install_logging_bridge()`` routes the stdlib ``logging`` module (library
logs, ``warnings``) through the same logger, with the stdlib logger's name in the
``logger`` field.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from typing import IO, Any, Final, cast

import orjson

from baqup_agent._redaction import REDACTOR, Redactor, escape_surrogates
from baqup_agent.contract import LogFormat, LogLevel
from baqup_agent.contract.tables import LOG_RECORD_FIELDS

__all__ = ["COLLISION_PREFIX", "RESERVED_FIELDS", "Logger", "LoggingBridge", "parse_level"]

RESERVED_FIELDS: Final = frozenset(LOG_RECORD_FIELDS)
"""Field names the logger writes itself; a structured field with one of these names is
written as ``extra_<name>``."""
COLLISION_PREFIX: Final = "extra_"

_TRACE, _DEBUG, _INFO, _WARN, _ERROR, _FATAL = (
    LogLevel.TRACE,
    LogLevel.DEBUG,
    LogLevel.INFO,
    LogLevel.WARN,
    LogLevel.ERROR,
    LogLevel.FATAL,
)
# the constant bytes between the timestamp and the message, one per level
_LEVEL_PARTS: Final = {
    level: b'","level":"' + level.name.encode() + b'","message":' for level in LogLevel
}
_NAME_ALIASES: Final = {"WARNING": LogLevel.WARN, "CRITICAL": LogLevel.FATAL}
_OPTIONS: Final = orjson.OPT_NON_STR_KEYS


def parse_level(level: LogLevel | int | str) -> LogLevel:
    """A ``LogLevel`` from a member, its number or its name (``"info"``, ``"WARNING"`` too)."""
    if isinstance(level, str):
        name = level.strip().upper()
        if name in _NAME_ALIASES:
            return _NAME_ALIASES[name]
        try:
            return LogLevel[name]
        except KeyError:
            raise ValueError(f"unknown log level {level!r}") from None
    return LogLevel(level)


# -- timestamps: the date and time of day change once a second -------------------------

_second: tuple[int, bytes] = (-1, b"")


def _timestamp() -> bytes:
    """Now as RFC 3339 UTC with microseconds and ``Z``."""
    global _second
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    cached = _second
    if cached[0] != seconds:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        cached = _second = (seconds, text.encode())
    return cached[1] + b".%06dZ" % (nanos // 1000)


# -- serialisation ---------------------------------------------------------------------


def _default(obj: Any) -> Any:
    """JSON for what orjson does not know: sets as lists, bytes as text, the rest as str.

    ``str`` of a Secret is ``[REDACTED]``; an object whose ``str`` fails is named.
    """
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj).decode("utf-8", "backslashreplace")
    try:
        return str(obj)
    except Exception:
        return f"<unprintable {type(obj).__name__}>"


def _escaped(obj: Any) -> Any:
    """``obj`` with every string made UTF-8-encodable (``escape_surrogates``)."""
    if isinstance(obj, str):
        return escape_surrogates(obj)
    if isinstance(obj, dict):
        return {
            _escaped(k if isinstance(k, str) else _default(k)): _escaped(v) for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_escaped(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float)):
        return obj
    return _escaped(_default(obj))


def _dumps(obj: Any) -> bytes:
    """orjson; text that is not UTF-8 (a path with lone surrogates) is escaped reversibly,
    and the stdlib serialises what orjson still refuses (huge ints)."""
    try:
        return orjson.dumps(obj, default=_default, option=_OPTIONS)
    except (TypeError, orjson.JSONEncodeError):
        try:
            return orjson.dumps(_escaped(obj), option=_OPTIONS)
        except (TypeError, orjson.JSONEncodeError, RecursionError):
            pass
        try:
            return json.dumps(_escaped(obj), skipkeys=True).encode()
        except (TypeError, ValueError, RecursionError):
            return orjson.dumps(f"<unserialisable {type(obj).__name__}>")


def _renamed(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` with reserved names prefixed (they must not overwrite the logger's own)."""
    return {(COLLISION_PREFIX + k if k in RESERVED_FIELDS else k): v for k, v in fields.items()}


def _exception_info(exc: BaseException) -> dict[str, str]:
    try:
        message = str(exc)
    except Exception:
        message = "<unprintable exception>"
    stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {"type": type(exc).__name__, "message": message, "stack": stack}


def _text_value(value: Any) -> str:
    """A field value for the text format: bare when unambiguous, JSON otherwise."""
    if (
        isinstance(value, str)
        and value
        and value.isprintable()
        and not any(c in value for c in ' "=')
    ):
        return value
    return _dumps(value).decode()


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


class Logger:
    """Write structured log lines for one job and agent.

    ``level`` is a ``LogLevel``, its number or its name (``"DEBUG"``, as in
    ``BAQUP_LOG_LEVEL``); ``format`` is ``"json"`` or ``"text"``; ``stream`` is any
    text stream, standard error (looked up at each write) when None; ``fields``
    are added to every line. Methods never raise because of the output: a closed or
    broken stream drops the line.
    """

    def __init__(
        self,
        job_id: str,
        agent_id: str,
        level: LogLevel | int | str = LogLevel.INFO,
        format: LogFormat | str = "json",
        *,
        stream: IO[str] | None = None,
        redactor: Redactor | None = None,
        **fields: Any,
    ) -> None:
        self.job_id = str(job_id)
        self.agent_id = str(agent_id)
        self.level = parse_level(level)
        self.format = LogFormat(format)
        self._json = self.format is LogFormat.JSON
        self._stream = stream
        self._redactor = REDACTOR if redactor is None else redactor
        self._ids = b',"job_id":' + _dumps(self.job_id) + b',"agent_id":' + _dumps(self.agent_id)
        self._set_fields(_renamed(fields))

    def _set_fields(self, bound: dict[str, Any]) -> None:
        self._bound = bound
        self._taken = RESERVED_FIELDS | bound.keys()
        # precomputed: the ids and bound fields as they appear in every JSON line
        self._const = self._ids + (b"," + _dumps(bound)[1:-1] if bound else b"")

    @property
    def level(self) -> LogLevel:
        """Lines below this level are dropped."""
        return self._level

    @level.setter
    def level(self, level: LogLevel | int | str) -> None:
        self._level = parse_level(level)

    @property
    def fields(self) -> dict[str, Any]:
        """The fields bound to this logger (a copy)."""
        return dict(self._bound)

    def bind(self, **fields: Any) -> Logger:
        """A logger writing to the same place that adds ``fields`` to every line.

        Any name works here, also those of the constructor's parameters (``level``,
        ``stream``...) and reserved ones (written as ``extra_<name>``).
        """
        child = copy.copy(self)
        child._set_fields({**self._bound, **_renamed(fields)})
        return child

    def enabled(self, level: LogLevel | int | str) -> bool:
        """Whether a line at ``level`` would be written."""
        return parse_level(level) >= self._level

    # -- the level methods: each checks its level before doing any work ----------------

    def log(
        self,
        level: LogLevel | int | str,
        message: str,
        /,
        exc: BaseException | bool | None = None,
        **fields: Any,
    ) -> None:
        """Write one line at ``level`` with structured ``fields``.

        ``exc`` attaches an exception (``True``: the one being handled).
        """
        if not isinstance(level, LogLevel):
            level = parse_level(level)
        if level >= self._level:
            self._emit(level, message, exc, fields, None)

    def trace(self, message: str, /, **fields: Any) -> None:
        """Log at TRACE."""
        if self._level <= _TRACE:
            self._emit(_TRACE, message, None, fields, None)

    def debug(self, message: str, /, **fields: Any) -> None:
        """Log at DEBUG."""
        if self._level <= _DEBUG:
            self._emit(_DEBUG, message, None, fields, None)

    def info(self, message: str, /, **fields: Any) -> None:
        """Log at INFO."""
        if self._level <= _INFO:
            self._emit(_INFO, message, None, fields, None)

    def warn(
        self, message: str, /, *, exc: BaseException | bool | None = None, **fields: Any
    ) -> None:
        """Log at WARN, with an exception when given."""
        if self._level <= _WARN:
            self._emit(_WARN, message, exc, fields, None)

    warning = warn

    def error(
        self, message: str, /, *, exc: BaseException | bool | None = None, **fields: Any
    ) -> None:
        """Log at ERROR, with an exception when given (``True``: the one being handled)."""
        if self._level <= _ERROR:
            self._emit(_ERROR, message, exc, fields, None)

    def fatal(
        self, message: str, /, *, exc: BaseException | bool | None = None, **fields: Any
    ) -> None:
        """Log at FATAL, with an exception when given. It does not exit."""
        if self._level <= _FATAL:
            self._emit(_FATAL, message, exc, fields, None)

    # -- writing -----------------------------------------------------------------------

    def _emit(
        self,
        level: LogLevel,
        message: Any,
        exc: BaseException | bool | None,
        fields: dict[str, Any],
        logger_name: str | None,
    ) -> None:
        if exc is True:
            exc = sys.exc_info()[1]
        error = exc if isinstance(exc, BaseException) else None
        if self._json:
            line = self._json_line(level, message, error, fields, logger_name)
        else:
            line = self._text_line(level, message, error, fields, logger_name)
        stream = sys.stderr if self._stream is None else self._stream
        try:
            stream.write(line)
            stream.flush()
        except (OSError, ValueError):  # closed or broken stream: logging must not kill the job
            pass

    def _json_line(
        self,
        level: LogLevel,
        message: Any,
        exc: BaseException | None,
        fields: dict[str, Any],
        logger_name: str | None,
    ) -> str:
        if not isinstance(message, str):
            message = _default(message)
        timestamp = _timestamp()
        const = self._const
        if logger_name is not None or (fields and not self._taken.isdisjoint(fields)):
            # the bound fields go into the merged dict, so that no key is written twice
            const = self._ids
            named = {} if logger_name is None else {"logger": logger_name}
            fields = {**self._bound, **named, **_renamed(fields)}
        parts = [b'{"timestamp":"', timestamp, _LEVEL_PARTS[level], _dumps(message), const]
        if fields:
            parts += (b",", _dumps(fields)[1:-1])
        if exc is not None:
            parts += (b',"exception":', _dumps(_exception_info(exc)))
        parts.append(b"}\n")
        line = b"".join(parts)
        if self._redactor.matches(line):
            bound = {} if const is self._ids else self._bound
            line = self._redacted_json_line(timestamp, level, message, exc, {**bound, **fields})
        return line.decode("utf-8")

    def _redacted_json_line(
        self,
        timestamp: bytes,
        level: LogLevel,
        message: str,
        exc: BaseException | None,
        fields: dict[str, Any],
    ) -> bytes:
        """The line rebuilt with every string, key and scalar redacted (the slow path)."""
        record: dict[str, Any] = {"message": message, "job_id": self.job_id}
        record["agent_id"] = self.agent_id
        record.update(fields)
        if exc is not None:
            record["exception"] = _exception_info(exc)
        # through JSON first, so that objects are redacted as the line shows them
        redacted = self._redactor.redact_tree(json.loads(_dumps(record)))
        line = {"timestamp": timestamp.decode(), "level": level.name}
        line.update(cast("dict[str, Any]", redacted))
        return _dumps(line) + b"\n"

    def _text_line(
        self,
        level: LogLevel,
        message: Any,
        exc: BaseException | None,
        fields: dict[str, Any],
        logger_name: str | None,
    ) -> str:
        if not isinstance(message, str):
            message = _default(message)
        head = f"{_timestamp().decode()} {level.name:<5} "
        if logger_name is not None:
            head += f"{logger_name}: "
        merged = {**self._bound, **_renamed(fields), "job_id": self.job_id}
        merged["agent_id"] = self.agent_id
        pairs = " ".join(f"{k}={_text_value(v)}" for k, v in merged.items())
        # redact before escaping newlines and indenting: both would split a secret's text
        redact = self._redactor.redact
        text = f"{head}{_one_line(redact(escape_surrogates(message)))}  {pairs}\n"
        if exc is not None:
            stack = redact(escape_surrogates(_exception_info(exc)["stack"])).rstrip("\n")
            text += "".join(f"    {line}\n" for line in stack.splitlines())
        return redact(text)

    # -- the stdlib bridge -------------------------------------------------------------

    def install_logging_bridge(
        self, logger: logging.Logger | str | None = None, *, capture_warnings: bool = True
    ) -> LoggingBridge:
        """Route stdlib ``logging`` records through this logger; return the handler.

        The handler goes on ``logger`` (the root logger by default, so every library
        logger that propagates is covered), replacing a bridge installed before; the
        stdlib logger's level is set to match this logger's, so records that would be
        dropped are not even built. With ``capture_warnings`` the ``warnings`` module
        goes through logging too. Remove it with ``logger.removeHandler(handler)``.
        """
        target = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger)
        for handler in list(target.handlers):
            if isinstance(handler, LoggingBridge):
                target.removeHandler(handler)
        bridge = LoggingBridge(self)
        target.addHandler(bridge)
        target.setLevel(_STDLIB_LEVELS[self._level])
        if capture_warnings:
            logging.captureWarnings(True)
        return bridge

    @contextlib.contextmanager
    def route_python_output(self) -> Iterator[LoggingBridge]:
        """Route everything Python itself would print to standard error through this logger.

        While the block runs: the root ``logging`` logger writes through a
        ``LoggingBridge`` only (its other handlers are set aside, and the bridge is
        also ``logging.lastResort``, used for loggers that do not propagate),
        ``warnings`` go through logging (logger ``py.warnings``), and uncaught
        exceptions (``sys.excepthook``), exceptions that end a thread
        (``threading.excepthook``) and unraisable ones (``sys.unraisablehook``, e.g.
        in ``__del__``) become ERROR/FATAL lines. So every line is formatted and
        redacted. Everything is put back when the block ends. ``run()`` does this by
        default (``Agent.route_python_output = False`` opts out).
        """
        root = logging.getLogger()
        saved = (
            list(root.handlers),
            root.level,
            logging.lastResort,
            sys.excepthook,
            threading.excepthook,
            sys.unraisablehook,
        )
        capturing = getattr(logging, "_warnings_showwarning", None) is not None
        for handler in saved[0]:
            root.removeHandler(handler)
        bridge = self.install_logging_bridge(root, capture_warnings=True)
        logging.lastResort = bridge

        def uncaught(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
            self.fatal("uncaught exception", exc=exc.with_traceback(tb))

        def thread_died(args: threading.ExceptHookArgs) -> None:
            if args.exc_type is SystemExit:  # as the default hook: a thread's normal exit
                return
            name = args.thread.name if args.thread is not None else None
            exc = args.exc_value if args.exc_value is not None else args.exc_type()
            self.error("uncaught exception in a thread", exc=exc, thread=name)

        def unraisable(args: Any) -> None:
            where = None if args.object is None else _default(args.object)
            message = args.err_msg or "exception ignored"
            self.error(message, exc=args.exc_value, object=where)

        sys.excepthook = uncaught
        threading.excepthook = thread_died
        sys.unraisablehook = unraisable
        try:
            yield bridge
        finally:
            root.removeHandler(bridge)
            for handler in saved[0]:
                root.addHandler(handler)
            root.setLevel(saved[1])
            logging.lastResort = saved[2]
            sys.excepthook, threading.excepthook, sys.unraisablehook = saved[3:]
            if not capturing:
                logging.captureWarnings(False)


# -- the stdlib bridge -----------------------------------------------------------------

_STDLIB_LEVELS: Final = {
    LogLevel.TRACE: 5,
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.INFO: logging.INFO,
    LogLevel.WARN: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
    LogLevel.FATAL: logging.CRITICAL,
}
# attributes every LogRecord has; anything else came in through ``extra=``
_RECORD_ATTRIBUTES: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)


def _from_stdlib(levelno: int) -> LogLevel:
    """The contract level of a stdlib level number (between two levels: the lower one)."""
    for level in (_FATAL, _ERROR, _WARN, _INFO, _DEBUG):
        if levelno >= _STDLIB_LEVELS[level]:
            return level
    return _TRACE


class LoggingBridge(logging.Handler):
    """A ``logging.Handler`` that writes stdlib records through a ``Logger``.

    The record's logger name goes to the ``logger`` field, ``extra=`` attributes
    become structured fields, ``exc_info`` becomes the ``exception`` object, and
    the level maps DEBUG/INFO/WARNING/ERROR/CRITICAL to DEBUG/INFO/WARN/ERROR/FATAL
    (below DEBUG: TRACE).
    """

    def __init__(self, logger: Logger) -> None:
        super().__init__()
        self.logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        """Write ``record`` as one line of the target logger."""
        level = _from_stdlib(record.levelno)
        if level < self.logger.level:
            return
        try:
            message = record.getMessage()
        except Exception:  # bad %-arguments: keep the template rather than lose the line
            message = f"{record.msg} (unformattable arguments)"
        fields = {
            k: v
            for k, v in vars(record).items()
            if k not in _RECORD_ATTRIBUTES and not k.startswith("_")
        }
        if record.stack_info:
            fields["stack_info"] = record.stack_info
        exc = record.exc_info[1] if record.exc_info else None
        self.logger._emit(level, message, exc, fields, record.name)
