"""An agent that pushes its secrets through every carrier it can (the leak property test).

``LEAK_SECRET`` (a secret variable) and the ``password`` inside ``LEAK_NESTED`` (an
object variable) are written into log messages and fields, exceptions, stdlib
logging, warnings, a dying thread, an unraisable exception, progress messages, a
child process's environment and, last, the exception that fails the job
(``LEAK_FINAL`` picks its shape). Nothing may show any form of either secret.
"""

from __future__ import annotations

import gc
import json
import logging
import subprocess
import sys
import threading
import warnings
from typing import Any
from urllib.parse import quote, urlencode

from baqup_agent import Agent, Context, DataError


class _Dies:
    def __init__(self, text: str) -> None:
        self.text = text

    def __del__(self) -> None:
        raise ValueError(f"in __del__: {self.text!r}")


def _utf8(pw: str) -> bytes:
    return pw.encode("utf-8", "surrogateescape")  # a value from a non-UTF-8 environment


def carriers(pw: str) -> list[Any]:
    """The shapes a secret takes in an agent's or a library's output."""
    return [
        pw,
        repr(pw),
        f"{pw!r}",
        json.dumps(pw),
        json.dumps({"password": pw}),
        _utf8(pw),
        repr(_utf8(pw)),
        f"postgres://user:{quote(_utf8(pw), safe='')}@db:5432/x",
        f"postgres://user:{pw}@db:5432/x",
        [pw, {"k": pw}],
        f"https://api.example/?{urlencode({'token': _utf8(pw)})}",
        KeyError(pw),
        OSError(13, "denied", pw),
        Exception("login failed", pw, 5),
    ]


def finals(pw: str) -> dict[str, BaseException]:
    return {
        "keyerror": KeyError(pw),
        "oserror": OSError(13, "denied", pw),
        "repr": RuntimeError(f"bad value {pw!r}"),
        "bytes": DataError(f"bad bytes {_utf8(pw)!r}"),
        "json": ValueError(json.dumps({"dsn": pw})),
    }


class LeakyAgent(Agent):
    name = "leaky"
    version = "0.1.0"
    config_schema = "leaky-agent-schema.json"

    def backup(self, ctx: Context) -> None:
        secrets = [ctx.config["LEAK_SECRET"].reveal(), ctx.config["LEAK_NESTED"]["password"]]
        lib = logging.getLogger("somelib.driver")
        for pw in secrets:
            for i, carrier in enumerate(carriers(pw)):
                ctx.logger.info(f"carrier {carrier}", value=carrier, n=i)
                ctx.logger.warn("with exception", exc=RuntimeError(carrier))
                lib.warning("dsn=postgres://u:%s@h/db %r", carrier, carrier)
                lib.error("failed", exc_info=RuntimeError(carrier))
                logging.warning("root logger %s", carrier)
                warnings.warn(f"careful with {carrier!r}", stacklevel=1)
                ctx.progress(items=1, message=f"step {carrier!r}")
            thread = threading.Thread(target=_raise, args=(pw,))
            thread.start()
            thread.join()
            _Dies(pw)
            gc.collect()
        # a child inherits the environment: the secret must not be in it
        child = "import os, sys; sys.stdout.write(repr(sorted(os.environ.items())))"
        subprocess.run([sys.executable, "-c", child], check=True)
        with ctx.artifact("plain.txt", compression="none") as out:
            out.write(b"nothing secret here\n")
        ctx.source_metadata["note"] = "published with the secrets in the logs only"
        final = str(ctx.config["LEAK_FINAL"])
        if final != "none":  # "none": the job succeeds and publishes
            raise finals(secrets[0])[final]


def _raise(pw: str) -> None:
    raise ConnectionError(f"lost connection to postgres://u:{pw}@h")


if __name__ == "__main__":
    LeakyAgent.main()
