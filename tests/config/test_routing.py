"""``Logger.route_python_output``: the stdlib root, warnings and every exception hook go
through the logger (formatted and redacted), and everything is put back afterwards."""

from __future__ import annotations

import gc
import json
import logging
import sys
import threading
import warnings

from baqup_agent._logger import Logger, LoggingBridge
from baqup_agent._secret import Secret
from baqup_agent.testing import LogCapture

PW = 'r0ute\\d "pw"\n'


class _Dies:
    def __del__(self) -> None:
        raise ValueError(PW)


def test_everything_python_prints_goes_through_the_logger() -> None:
    Secret(PW)
    root = logging.getLogger()
    before = (list(root.handlers), root.level, logging.lastResort)
    hooks = (sys.excepthook, threading.excepthook, sys.unraisablehook)
    stream = LogCapture()
    with Logger("j", "a", stream=stream).route_python_output() as bridge:
        assert root.handlers == [bridge] and logging.lastResort is bridge
        logging.getLogger("psycopg").warning("dsn=postgres://u:%s@h/db", PW)
        quiet = logging.getLogger("quiet.lib")
        quiet.propagate = False  # no handler of its own: the last resort writes it
        quiet.error("lost %r", PW)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn(f"deprecated {PW!r}", stacklevel=1)
        thread = threading.Thread(target=lambda: (_ for _ in ()).throw(KeyError(PW)))
        thread.start()
        thread.join()
        _Dies()
        gc.collect()
        try:
            raise OSError(13, "denied", PW)
        except OSError as exc:
            sys.excepthook(type(exc), exc, exc.__traceback__)
    out = stream.getvalue()
    assert PW not in out and repr(PW)[1:-1] not in out and json.dumps(PW)[1:-1] not in out
    got = stream.records()
    assert [r.get("logger") for r in got[:3]] == ["psycopg", "quiet.lib", "py.warnings"]
    assert got[3]["message"] == "uncaught exception in a thread"
    assert got[3]["exception"]["type"] == "KeyError"
    assert got[4]["exception"]["type"] == "ValueError"  # the unraisable one
    assert (got[5]["level"], got[5]["message"]) == ("FATAL", "uncaught exception")
    assert all("[REDACTED]" in json.dumps(r) for r in got)
    assert (list(root.handlers), root.level, logging.lastResort) == before
    assert (sys.excepthook, threading.excepthook, sys.unraisablehook) == hooks
    assert not any(isinstance(h, LoggingBridge) for h in root.handlers)


def test_a_thread_that_exits_normally_is_not_reported() -> None:
    stream = LogCapture()
    with Logger("j", "a", stream=stream).route_python_output():
        thread = threading.Thread(target=sys.exit)
        thread.start()
        thread.join()
    assert stream.getvalue() == ""
