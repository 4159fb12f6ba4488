"""The agent's configuration from the environment (contract section 2).

``load_config(schema_path)`` merges the base contract (``schema/config.json``, the
``BAQUP_*`` variables) with the agent's own ``agent-schema.json``, reads, coerces,
defaults and validates the environment and returns a ``Config``; its ``settings``
are the typed ``JobSettings`` the runtime receives.
"""

from baqup_agent._config import Config, JobSettings, job_settings, load_config
from baqup_agent._surface import publish_all as _publish_all

__all__ = ["Config", "JobSettings", "job_settings", "load_config"]

_publish_all(__name__, globals())
