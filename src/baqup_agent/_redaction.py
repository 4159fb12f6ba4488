"""The process-wide redactor, re-exported from ``baqup_schema.redaction``.

It lives in the baqup-schema distribution with ``Secret``, which registers every
secret value with it; the logger, error summaries and the bus redact through the
same ``REDACTOR`` object.
"""

from baqup_schema.redaction import MIN_SECRET_LENGTH as MIN_SECRET_LENGTH
from baqup_schema.redaction import REDACTED as REDACTED
from baqup_schema.redaction import REDACTOR as REDACTOR
from baqup_schema.redaction import Redactor as Redactor
from baqup_schema.redaction import escape_surrogates as escape_surrogates
from baqup_schema.redaction import redact as redact
from baqup_schema.redaction import unescape_surrogates as unescape_surrogates
