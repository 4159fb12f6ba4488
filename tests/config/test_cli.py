"""``baqup-agent validate-config``: exit 0 / 64, one line per error, never a secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CANARY = "cli-canary-7Qx"


def run(schema: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BAQUP_", "FS_"))}
    return subprocess.run(
        [sys.executable, "-m", "baqup_agent", "validate-config", "--schema", str(schema), *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_valid_environment_exits_0(agent_schema: Path, env: dict[str, str]) -> None:
    done = run(agent_schema, env)
    assert (done.returncode, done.stdout) == (0, "ok: 14 variables\n")


def test_invalid_environment_exits_64_with_one_line_per_error(agent_schema: Path) -> None:
    env = {
        "BAQUP_JOB_ID": "job-1",
        "BAQUP_ROLE": "restore",
        "BAQUP_REDIS_URL": f"http://u:{CANARY}@h/",
        "FS_LEVEL": "high",
        "BAQUP_JOBID": "x",
    }
    done = run(agent_schema, env)
    assert done.returncode == 64
    assert done.stdout.splitlines() == [
        "BAQUP_AGENT_ID: is required",
        'BAQUP_RESTORE_SOURCE: is required when BAQUP_ROLE is "restore"',
        'BAQUP_REDIS_URL: must match the pattern "^rediss?://"',
        "FS_SOURCE: is required",
        'FS_LEVEL: must be an integer (got "high")',
        'FS_HOST: is required when BAQUP_ROLE is "restore"',
        "BAQUP_JOBID: is not a known variable (did you mean BAQUP_JOB_ID?)",
    ]
    assert CANARY not in done.stdout + done.stderr


def test_json_output_and_prefix(agent_schema: Path, env: dict[str, str]) -> None:
    done = run(agent_schema, {**env, "FS_SORCE": "/x"}, "--prefix", "FS_", "--json")
    assert done.returncode == 64
    report = json.loads(done.stdout)
    assert report["valid"] is False
    assert report["errors"] == [
        {
            "variable": "FS_SORCE",
            "message": "is not a known variable (did you mean FS_SOURCE?)",
            "keyword": "additionalProperties",
        }
    ]
    done = run(agent_schema, env, "--json")
    assert (done.returncode, json.loads(done.stdout)) == (0, {"valid": True, "variables": 14})


def test_missing_schema_file_exits_64(tmp_path: Path, env: dict[str, str]) -> None:
    done = run(tmp_path / "absent.json", env)
    assert done.returncode == 64
    assert done.stdout.startswith("schema: cannot read ")
