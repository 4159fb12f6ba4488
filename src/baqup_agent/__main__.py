"""``python -m baqup_agent``: the ``baqup-agent`` command."""

import sys

from baqup_agent._cli import main

sys.exit(main())
