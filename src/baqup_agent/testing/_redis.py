"""A redis-server owned by a test or by the conformance suite (one implementation)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A ``redis-server`` on a free loopback port: no persistence, optional password.

    ``password`` becomes ``requirepass`` through a config file (on the command line
    ``ps`` would show it); ``extra_args`` are appended to the command line (cluster mode,
    TLS, ACL users). ``start``, ``stop`` and ``restart`` (same port) may be called again;
    as a context manager the server runs for the ``with`` block.
    """

    def __init__(
        self,
        workdir: str | Path,
        *,
        password: str | None = None,
        port: int | None = None,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.workdir = Path(workdir)
        self.password = password
        self.port = port or free_port()
        self.binary = binary
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self._version = ""

    @staticmethod
    def find(binary: str | None = None) -> str | None:
        """Path of the redis-server binary (``binary`` or the one on PATH), or None."""
        return shutil.which(binary or "redis-server")

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``, without credentials (the password travels apart)."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def version(self) -> str:
        """The server's ``redis_version`` (asked once, from a started server)."""
        if not self._version:
            client = self.client()
            try:
                self._version = str(client.info("server").get("redis_version", ""))
            finally:
                client.close()
        return self._version

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it accepts connections.

        Raises ``FileNotFoundError`` when there is no redis-server binary and
        ``RuntimeError`` when it exits or does not listen within ``timeout`` seconds.
        """
        binary = self.find(self.binary)
        if binary is None:
            raise FileNotFoundError(f"{self.binary or 'redis-server'} is not installed")
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [binary]
        if self.password is not None:
            conf = self.workdir / "redis.conf"
            conf.write_text(f'requirepass "{_conf_quote(self.password)}"\n', encoding="utf-8")
            conf.chmod(0o600)
            argv.append(str(conf))  # the config file comes first on redis-server's line
        argv += ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.workdir), *self.extra_args]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # a TCP connect, not PING: a TLS-only or ACL-restricted server is ready too
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError as exc:
                if self.proc.poll() is not None:
                    code = self.proc.returncode
                    self.proc = None
                    raise RuntimeError(f"redis-server exited with {code}") from exc
                time.sleep(0.02)
        self.stop(kill=True)
        raise RuntimeError(f"redis-server did not start within {timeout} s")

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGTERM, or SIGKILL with ``kill``) and wait for it."""
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        """Kill the server and start it again on the same port (its data is lost)."""
        self.stop(kill=True)
        self.start()

    def client(self) -> Any:
        """A ``redis.Redis`` with the server's password, decoding responses as UTF-8.

        Typed ``Any``: with ``decode_responses`` every reply is ``str``, which redis-py's
        annotations (``bytes | str``) cannot express.
        """
        import redis

        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            decode_responses=True,
            socket_timeout=5,
            socket_connect_timeout=2,
        )

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(kill=True)


def _conf_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
