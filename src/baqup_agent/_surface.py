"""Public objects name their public module.

The SDK's code lives in private modules (a leading underscore); a public module
re-exports what authors use. ``publish`` rewrites each exported object's
``__module__`` to the public module, as httpx does, so reprs, tracebacks, pickles
and generated docs show the import path authors are meant to use.
"""

from __future__ import annotations

import contextlib
import sys
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
        if isinstance(value, type):
            _resolve_annotations(value, vars(sys.modules[module]))
        value.__module__ = public_module
    return value


def _resolve_annotations(cls: type, namespace: dict[str, Any]) -> None:
    """Evaluate ``cls``'s own string annotations where it was defined.

    ``typing.get_type_hints`` looks a class's annotations up in the module its
    ``__module__`` names: once that is the public one, a name such as ``ClassVar`` would
    no longer be found there. One it cannot resolve here stays a string (as a
    ``TYPE_CHECKING``-only name always did).
    """
    import inspect  # only when a class is published: the runtime loads it by then anyway

    resolved = {}
    for name, annotation in inspect.get_annotations(cls).items():
        if isinstance(annotation, str):
            with contextlib.suppress(Exception):  # any failure: keep it as it was
                annotation = eval(annotation, namespace, dict(vars(cls)))
        resolved[name] = annotation
    if resolved:
        cls.__annotations__ = resolved


def publish_all(public_module: str, namespace: MutableMapping[str, Any]) -> None:
    """``publish`` every name of ``namespace["__all__"]`` (a facade module's globals)."""
    for name in namespace["__all__"]:
        publish(public_module, namespace[name])
