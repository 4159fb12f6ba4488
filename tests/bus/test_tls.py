"""rediss:// (TLS) against a real redis-server with a throw-away certificate."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from baqup_agent.contract import AgentState, ExitCode, ResultStatus
from tests.bus.conftest import BusFactory, LogCapture
from tests.conftest import RedisServer, require_binary


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, Path]]:
    workdir = tmp_path_factory.mktemp("tls")
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        [require_binary("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    server = RedisServer(workdir / "redis")
    server.extra_args = ["--port", "0", "--tls-port", str(server.port),  # TLS only
                         "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                         "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]  # fmt: skip
    server.start()
    yield server, cert
    server.stop(kill=True)


def test_rediss_with_a_ca_file(tls_server: tuple[RedisServer, Path], make_bus: BusFactory) -> None:
    server, cert = tls_server
    bus = make_bus(f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={cert}")
    assert bus.connected
    bus.send_state_change(AgentState.RUNNING, AgentState.INITIALIZING)
    assert bus.send_result(ResultStatus.SUCCESS, ExitCode.SUCCESS, False, 1.0)


def test_an_untrusted_certificate_falls_back_to_the_spool(
    tls_server: tuple[RedisServer, Path], make_bus: BusFactory, log: LogCapture
) -> None:
    server, _ = tls_server
    bus = make_bus(f"rediss://127.0.0.1:{server.port}/0", result_timeout=0.2)
    assert not bus.connected  # the self-signed certificate is not trusted by default
    assert not bus.send_result(ResultStatus.SUCCESS, ExitCode.SUCCESS, False, 1.0)
    assert log.count("Redis unreachable") == 1
    assert "CERTIFICATE_VERIFY_FAILED" in log.getvalue()
