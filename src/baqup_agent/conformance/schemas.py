"""JSON Schema validation of what an agent emits, against the packaged contract schemas.

The suite validates with jsonschema (not the generated pydantic models) so that its
verdict is exactly what the published schema files say, whatever language the agent
under test is written in.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

SCHEMA_BASE = "https://baqup.io/schema/agent/v1/"


@functools.cache
def _validator(name: str) -> Any:
    """A Draft 2020-12 validator (formats checked) for schema file ``name``."""
    from jsonschema import Draft202012Validator, FormatChecker
    from referencing import Registry, Resource

    folder = resources.files("baqup_agent.contract") / "schemas"
    resources_ = []
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            contents = json.loads(entry.read_text(encoding="utf-8"))
            resources_.append((contents["$id"], Resource.from_contents(contents)))
    registry: Registry[Any] = Registry().with_resources(resources_)
    # a $ref schema reaches a $defs branch as easily as a whole file
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$ref": SCHEMA_BASE + name}
    return Draft202012Validator(schema, registry=registry, format_checker=FormatChecker())


def warm_up() -> None:
    """Build the validators the checks use (importing jsonschema takes seconds: do it early,
    in a thread, while the scenarios run)."""
    for name in ("log-record.json", "manifest.json", "bus-message.json#/$defs/Heartbeat"):
        _validator(name)


def schema_errors(name: str, instance: object, *, limit: int = 3) -> list[str]:
    """Messages of the ways ``instance`` breaks schema ``name`` (empty when valid)."""
    errors = sorted(_validator(name).iter_errors(instance), key=lambda e: list(e.path))
    out = []
    for error in errors[:limit]:
        where = "/".join(str(p) for p in error.absolute_path)
        out.append(f"{where or '(root)'}: {error.message}")
    return out


def bus_message_errors(message: object) -> list[str]:
    """Schema errors of one bus message, against its own ``type``'s definition when known.

    The union's oneOf error says only "not valid under any of the given schemas";
    validating against the branch the message's type names gives the useful error.
    """
    branches = {
        "state_change": "StateChange",
        "heartbeat": "Heartbeat",
        "progress": "ProgressUpdate",
        "result": "Result",
        "cancel": "Cancel",
    }
    kind = message.get("type") if isinstance(message, dict) else None
    if not isinstance(kind, str) or kind not in branches:
        return [f"type: {kind!r} is not a bus message type ({', '.join(branches)})"]
    return schema_errors(f"bus-message.json#/$defs/{branches[kind]}", message)
