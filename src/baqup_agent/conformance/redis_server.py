"""A private redis-server for one suite run: loopback, free port, password, no persistence."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRedis:
    """redis-server started on a free loopback port with ``password`` (requirepass)."""

    def __init__(self, binary: str, workdir: Path, password: str) -> None:
        self.binary = binary
        self.workdir = workdir
        self.password = password
        self.port = free_port()
        self.version = ""
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def find(binary: str | None = None) -> str | None:
        """Path of the redis-server binary, or None when it is not installed."""
        return shutil.which(binary or "redis-server")

    @property
    def url(self) -> str:
        """URL without credentials (the password travels separately)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it accepts connections."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        # the password goes through a config file: on the command line `ps` would show it
        conf = self.workdir / "redis.conf"
        conf.write_text(f'requirepass "{_conf_quote(self.password)}"\n', encoding="utf-8")
        conf.chmod(0o600)
        self._proc = subprocess.Popen(
            [self.binary, str(conf), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}")
            try:
                info = self.client().info("server")
                self.version = str(info.get("redis_version", ""))
                return
            except Exception:  # not listening yet
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not start within {timeout} s")

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

    def stop(self) -> None:
        """Kill the server and wait for it."""
        if self._proc is None:
            return
        self._proc.kill()
        self._proc.wait(timeout=10)
        self._proc = None


def _conf_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
