"""The usage snippet of the published 0.0.1 preview's README prints what it says."""

from __future__ import annotations

import subprocess
import sys

# verbatim from the preview's "Usage (Preview API)"
SNIPPET = """
from baqup_agent import ExitCode, AgentState, LogLevel
# Exit codes are already available
print(ExitCode.SUCCESS) # 0
print(ExitCode.USAGE_CONFIG_ERROR) # 64
# Agent states
print(AgentState.RUNNING) # 'running'
# Secret wrapper (available now)
from baqup_agent import Secret
password = Secret("my-secret-password")
print(password) # [REDACTED]
print(password.reveal()) # my-secret-password
"""


def test_preview_snippet_prints_exactly_what_it_says() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SNIPPET], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.splitlines() == ["0", "64", "running", "[REDACTED]", "my-secret-password"]
    assert done.stderr == ""
