"""The contract's schemas as jsonschema sees them.

The packaged copies of ``schema/*.json`` (``baqup_schema.contract.schemas``), the
``$ref`` registry over them (references resolve there, never over the network), the
format checker with the contract's custom ``path`` and ``hostname`` formats, and a
cached validator per contract schema. jsonschema and referencing are imported on
first use only.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonschema import FormatChecker
    from referencing import Registry

__all__ = [
    "base_config",
    "contract_base_uri",
    "contract_registry",
    "contract_schemas",
    "contract_validator",
    "format_checker",
    "is_hostname",
    "is_path",
    "resource",
]

# -- formats ---------------------------------------------------------------------------
# -- formats ---------------------------------------------------------------------------

_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def is_path(value: object) -> bool:
    """Format ``path``: an absolute or relative POSIX path, not empty, no NUL, <= 4096 chars."""
    if not isinstance(value, str):
        return True  # formats constrain strings only
    return 0 < len(value) <= 4096 and "\x00" not in value  # not-a-schema-value: PATH_MAX


def is_hostname(value: object) -> bool:
    """Format ``hostname``: RFC 1123 labels of letters, digits and inner dashes, <= 253 chars."""
    if not isinstance(value, str):
        return True
    name = value[:-1] if value.endswith(".") else value
    if not name or len(name) > 253:
        return False
    return all(_HOST_LABEL.fullmatch(label) for label in name.split("."))


@functools.cache
def format_checker() -> FormatChecker:
    """jsonschema's standard format checks plus ``path`` and ``hostname``."""
    from jsonschema import Draft202012Validator, FormatChecker

    checker = FormatChecker(Draft202012Validator.FORMAT_CHECKER.checkers)
    checker.checks("path")(is_path)
    checker.checks("hostname")(is_hostname)
    return checker


# -- the contract's schemas and the registry -------------------------------------------


@functools.cache
def contract_schemas() -> dict[str, dict[str, Any]]:
    """The packaged contract schemas by file name (shared: never mutate them)."""
    folder = resources.files("baqup_schema.contract").joinpath("schemas")
    schemas: dict[str, dict[str, Any]] = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            schemas[entry.name] = json.loads(entry.read_text(encoding="utf-8"))
    return schemas


def base_config() -> dict[str, Any]:
    """The base contract's config schema (``config.json``; shared: never mutate it)."""
    return contract_schemas()["config.json"]


def contract_base_uri() -> str:
    """The URI the contract's ``$id``s share, e.g. ``https://baqup.io/schema/agent/v1/``."""
    base_id: str = base_config()["$id"]
    return base_id.rsplit("/", 1)[0] + "/"


def resource(schema: Mapping[str, Any]) -> Any:
    """``schema`` as a Draft 2020-12 ``referencing`` resource."""
    from referencing import Resource
    from referencing.jsonschema import DRAFT202012

    return Resource.from_contents(schema, default_specification=DRAFT202012)


@functools.cache
def contract_registry() -> Registry:
    """A registry holding every contract schema under its ``$id``."""
    from referencing import Registry

    resources_ = [(s["$id"], resource(s)) for s in contract_schemas().values()]
    return Registry().with_resources(resources_).crawl()


@functools.cache
def contract_validator(name: str) -> Any:
    """A validator of a packaged schema file, optionally with a fragment (built once)."""
    from jsonschema import Draft202012Validator

    # a $ref reaches a $defs branch ("bus-message.json#/$defs/Heartbeat") as easily as a file
    root = {"$schema": base_config()["$schema"], "$ref": contract_base_uri() + name}
    return Draft202012Validator(root, registry=contract_registry(), format_checker=format_checker())
