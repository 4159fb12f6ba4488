"""CI: the lowest versions the project declares for its direct runtime dependencies work.

``python .ci/lowest_deps_smoke.py VENV`` creates ``VENV`` (a second venv: the normal run
stays on the latest versions), installs each runtime dependency of pyproject.toml at
its declared lower bound plus the project itself, and runs a backup job of the example
filesystem agent against a real ``redis-server``: exit 0, the result in Redis and every
state change on the events stream. Stdlib only, so it runs before anything is installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIST = ROOT / "packages" / "baqup-schema"
_LOWER = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([^,;\s]+)")

# Runs inside VENV: the job's events and result, read with the redis-py under test.
_CHECK = """
import json, sys, redis
r = redis.Redis.from_url(sys.argv[1])
job = sys.argv[2]
events = [json.loads(f[b"msg"]) for _, f in r.xrange(f"baqup:{{{job}}}:events")]
result = json.loads(r.get(f"baqup:{{{job}}}:result"))
states = [m["to_state"] for m in events if m["type"] == "state_change"]
assert result["status"] == "success" and result["exit_code"] == 0, result
assert events[-1]["type"] == "result", events[-1]
assert states == ["initializing", "running", "completing", "terminated"], states
print("lowest-deps smoke: result", result["status"], "after", len(events), "events")
"""


def _specs(pyproject: Path) -> list[str]:
    text = pyproject.read_text()
    try:
        import tomllib
    except ImportError:  # Python 3.10: the [project] dependencies list, by hand
        block = re.search(r"(?ms)^dependencies = \[(.*?)^\]", text)
        assert block is not None, f"no dependencies list in {pyproject}"
        return re.findall(r'^\s*"([^"]+)"', block[1], re.M)
    return list(tomllib.loads(text)["project"]["dependencies"])


def lower_bounds() -> list[str]:
    """``name==lower`` for every runtime dependency of both distributions (the highest
    lower bound where both name one); each must declare ``>=``. baqup-schema itself is
    this repository's, installed from its folder."""
    lowest: dict[str, str] = {}
    for pyproject in (SCHEMA_DIST / "pyproject.toml", ROOT / "pyproject.toml"):
        for spec in _specs(pyproject):
            if spec.startswith("baqup-schema"):
                continue
            match = _LOWER.match(spec)
            if match is None:
                raise SystemExit(f"dependency {spec!r} declares no '>=' lower bound")
            name, version = match[1].lower(), match[2]
            if name not in lowest or _key(version) > _key(lowest[name]):
                lowest[name] = version
    return [f"{name}=={version}" for name, version in sorted(lowest.items())]


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(venv: Path) -> int:
    pins = lower_bounds()
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, *pins], check=True)
    subprocess.run([*pip, "--no-deps", "-e", str(SCHEMA_DIST), "-e", str(ROOT)], check=True)
    print("lowest-deps smoke:", " ".join(pins), flush=True)

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    work = Path(tempfile.mkdtemp(prefix="baqup-lowest-"))
    server = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(work),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        source = work / "source"
        source.mkdir()
        (source / "data.txt").write_text("lowest versions\n" * 1000)
        job = "lowest-deps-1"
        env = {
            **os.environ,
            "BAQUP_JOB_ID": job,
            "BAQUP_AGENT_ID": "lowest-deps",
            "BAQUP_ROLE": "backup",
            "BAQUP_STAGING_DIR": str(work / "staging"),
            "BAQUP_REDIS_URL": url,
            "BAQUP_FS_SOURCE": str(source),
            "BAQUP_HEARTBEAT_INTERVAL": "0.2",
        }
        agent = ROOT / "examples" / "filesystem_agent" / "agent.py"
        run = subprocess.run([python, str(agent)], env=env, capture_output=True, text=True)
        if run.returncode != 0:
            print(run.stderr, file=sys.stderr)
            print(f"lowest-deps smoke: the job exited {run.returncode}", file=sys.stderr)
            return 1
        subprocess.run([python, "-c", _CHECK, url, job], check=True)
        manifest = json.loads((work / "staging" / job / "manifest.json").read_text())
        assert manifest["artifacts"], manifest
        return 0
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else ".venv-lowest")))
