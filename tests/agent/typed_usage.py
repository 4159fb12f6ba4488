"""How agents call the public API with what the stdlib returns; checked by mypy --strict.

Not collected by pytest (no test_ prefix): ``test_typing.py`` runs mypy on this file,
so a signature that rejects ``open()`` or ``subprocess.Popen`` objects fails a test.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from baqup_agent import Agent, Context


class ToolAgent(Agent):
    name = "typed"

    def backup(self, ctx: Context) -> None:
        proc = subprocess.Popen(["pg_dump"], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        with ctx.artifact("dump.sql.zst") as out:
            shutil.copyfileobj(ctx.track(proc.stdout), out)
        with open(ctx.work_dir / "extra", "rb") as f, ctx.artifact("extra.zst") as out:
            shutil.copyfileobj(ctx.track(f), out)
            out.write(ctx.track(f).read())
        with ctx.artifact("tree.tar.zst") as out:
            ctx.create_tar(out, Path("/data"))
        with tempfile.TemporaryFile() as spill, ctx.artifact("spill.zst") as out:
            ctx.create_tar(spill, "/data")
            spill.seek(0)
            shutil.copyfileobj(ctx.track(spill), out)
        with ctx.artifact("child.zst") as out:
            ctx.run_child(["pg_dump"], stdout=out)
        with open(ctx.work_dir / "child-copy", "wb") as copy:
            ctx.run_child(["pg_dump"], stdout=copy)

    def restore(self, ctx: Context) -> None:
        proc = subprocess.Popen(["psql"], stdin=subprocess.PIPE)
        assert proc.stdin is not None
        with ctx.open_artifact("dump.sql.zst") as src:
            shutil.copyfileobj(src, proc.stdin)
        with open("/backup/tree.tar", "rb") as f:
            ctx.extract_tar(ctx.track(f), "/restore")
        with ctx.open_artifact("tree.tar.zst") as src:
            ctx.extract_tar(src, Path("/restore"))
        with ctx.open_artifact("child.zst") as src:
            ctx.run_child(["psql"], stdin=src)
        with open("/backup/child-copy", "rb") as f:
            ctx.run_child(["psql"], stdin=f)
