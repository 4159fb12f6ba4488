"""Run an example agent with a gate in front of its backup, for the container tests.

    python gated_agent.py examples/filesystem_agent/agent.py

The backup first makes orphans (grandchildren that end at once, whose parent exits
without waiting for them: re-parented to PID 1, which must reap them), writes their
pids to ``$GATE_DIR/ready``, then waits for ``$GATE_DIR/go`` before the example's own
backup runs. While it waits it is a
checkpoint (a SIGTERM cancels it), unless ``GATE_STUCK`` is set: then it sleeps
without checkpoints, like a job inside one long call, and only the grace-period
watchdog can end it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

from baqup_agent import Agent, Context
from baqup_agent._errors import InternalError

STATUS_CHECKS = 20
ORPHAN_MAKER = """
import os
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    print(pid)
"""


def load(script: Path) -> type[Agent]:
    """The agent class defined in ``script``."""
    spec = importlib.util.spec_from_file_location(f"example_{script.parent.name}", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    (cls,) = (
        v
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, Agent) and v.__module__ == module.__name__
    )
    return cls


def gated(base: type[Agent]) -> type[Agent]:
    """``base`` with the gate in front of its backup."""

    class Gated(base):  # type: ignore[valid-type,misc]
        config_schema = str(base.schema_path())

        def backup(self, ctx: Context) -> None:
            gate = Path(os.environ["GATE_DIR"])
            # A helper forks children that end at once and exits without waiting for
            # them: they are orphans, zombies until PID 1 reaps them.
            orphans = subprocess.run(
                [sys.executable, "-c", ORPHAN_MAKER], check=True, capture_output=True, text=True
            ).stdout
            # The agent's own children keep their exit status while PID 1 reaps
            # orphans (each of these leaves one behind).
            for _ in range(STATUS_CHECKS):
                done = subprocess.run(["sh", "-c", 'sh -c "exit 0" & exit 7'], check=False)
                if done.returncode != 7:
                    raise InternalError(f"a child's exit status 7 came back as {done.returncode}")
            (gate / "ready.tmp").write_text(orphans)
            (gate / "ready.tmp").replace(gate / "ready")  # whole when the test sees it
            while not (gate / "go").exists():
                if os.environ.get("GATE_STUCK"):
                    time.sleep(3600)
                ctx.checkpoint()
                time.sleep(0.01)
            super().backup(ctx)

    return Gated


if __name__ == "__main__":
    gated(load(Path(sys.argv[1]))).main([])
