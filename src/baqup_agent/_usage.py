"""Command lines that fail like the contract says: a usage error is exit 64, not 2.

Shared by the ``baqup-agent`` command (``_cli``) and an agent's own command line
(``run()``: ``--help``, ``--version``).
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from baqup_agent.contract import ExitCode


class UsageParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors exit 64 (USAGE_CONFIG_ERROR), not 2.

    Its subparsers are of the same class.
    """

    def error(self, message: str) -> NoReturn:
        """Print the usage and ``message`` to standard error and exit 64."""
        self.print_usage(sys.stderr)
        self.exit(int(ExitCode.USAGE_CONFIG_ERROR), f"{self.prog}: error: {message}\n")
