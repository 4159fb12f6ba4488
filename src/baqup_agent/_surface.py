"""Public objects name their public module.

The SDK's code lives in private modules (a leading underscore); a public module
re-exports what authors use. ``publish`` rewrites each exported object's
``__module__`` to the public module, as httpx does, so reprs, tracebacks, pickles
and generated docs show the import path authors are meant to use.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any


def is_private(module: str) -> bool:
    """True when a component of the dotted ``module`` name starts with an underscore."""
    return any(part.startswith("_") for part in module.split("."))


def publish(public_module: str, value: Any) -> Any:
    """Give ``value`` the ``__module__`` ``public_module`` if it was defined in a private
    module of this SDK; objects of other packages and already-public ones are left alone.
    Returns ``value``."""
    module = getattr(value, "__module__", None)
    if isinstance(module, str) and module.startswith("baqup_agent.") and is_private(module):
        value.__module__ = public_module
    return value


def publish_all(public_module: str, namespace: MutableMapping[str, Any]) -> None:
    """``publish`` every name of ``namespace["__all__"]`` (a facade module's globals)."""
    for name in namespace["__all__"]:
        publish(public_module, namespace[name])
