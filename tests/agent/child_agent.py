"""An agent that wraps a shell command through ``Context.run_child`` (child tests).

The command comes from ``CHILD_TEST_SCRIPT`` (run by ``sh -c``); ``CHILD_TEST_TERM``
sets ``term_timeout``; ``CHILD_TEST_SECRET`` is registered as a secret and passed to
the child as ``$SECRET`` and as a file named by ``$SECRET_FILE``. Backup streams the
child's stdout into ``out.bin``; restore feeds ``out.bin`` to the child's stdin.
"""

from __future__ import annotations

import os

from baqup_agent import Agent, Context, DataError, ResourceUnavailable
from baqup_agent._child import SecretFile
from baqup_agent._secret import Secret


def _options() -> tuple[list[str], dict[str, str | Secret | SecretFile], float | None]:
    secret = Secret(os.environ.get("CHILD_TEST_SECRET", "no-secret-given"))
    env: dict[str, str | Secret | SecretFile] = {
        "SECRET": secret,
        "SECRET_FILE": SecretFile(secret),
    }
    term = os.environ.get("CHILD_TEST_TERM")
    return ["sh", "-c", os.environ["CHILD_TEST_SCRIPT"]], env, float(term) if term else None


class ChildAgent(Agent):
    name = "child-test"
    version = "0.1.0"

    def backup(self, ctx: Context) -> None:
        argv, env, term = _options()
        with ctx.artifact("out.bin", compression="none") as out:
            ctx.run_child(
                argv,
                stdout=out,
                env=env,
                term_timeout=term,
                exit_codes={65: DataError, 69: ResourceUnavailable},
            )

    def restore(self, ctx: Context) -> None:
        argv, env, term = _options()
        with ctx.open_artifact("out.bin") as data:
            ctx.run_child(argv, stdin=data, env=env, term_timeout=term)


if __name__ == "__main__":
    ChildAgent.main()
