"""A small agent whose behaviour the tests choose with BAQUP_TEST_BEHAVIOUR.

Runnable as a script (the subprocess tests) and importable (the in-process tests).
"""

from __future__ import annotations

import time

from baqup_agent import Agent, Context, DataError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class SampleAgent(Agent):
    name = "sample"
    version = "0.1.0"
    config_schema = "sample-agent-schema.json"

    def __init__(self) -> None:
        self.restored: bytes | None = None

    def backup(self, ctx: Context) -> None:
        behaviour = ctx.config["BAQUP_TEST_BEHAVIOUR"]
        seconds = float(ctx.config["BAQUP_TEST_SECONDS"])
        ctx.source_metadata["behaviour"] = behaviour
        with ctx.artifact("data.bin.zst") as out:
            out.write(PAYLOAD)
            ctx.progress(bytes=len(PAYLOAD), items=1)
            if behaviour == "raise":
                raise RuntimeError("boom")
            deadline = time.monotonic() + seconds
            while behaviour in ("slow", "stubborn") and time.monotonic() < deadline:
                if behaviour == "slow":
                    ctx.checkpoint()
                time.sleep(0.01)
        with ctx.artifact("notes.txt", compression="none") as out:
            out.write(b"sample notes\n")
        if behaviour == "partial":
            ctx.fail_artifact("extra.bin", "the source of extra.bin vanished")

    def restore(self, ctx: Context) -> None:
        with ctx.open_artifact("data.bin.zst") as f:
            self.restored = f.read()
        if self.restored != PAYLOAD:
            raise DataError("restored payload differs")


if __name__ == "__main__":
    SampleAgent.main()
