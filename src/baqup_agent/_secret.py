"""``Secret``, re-exported from ``baqup_schema.secret`` (config loading returns it)."""

from baqup_schema.secret import Secret as Secret
