"""JSON Schema validation of what an agent emits, against the packaged contract schemas.

The suite validates with jsonschema (``baqup_agent.schema.contract_errors``, not the
generated pydantic models) so that its verdict is exactly what the published schema
files say, whatever language the agent under test is written in.
"""

from __future__ import annotations

from baqup_agent.schema import contract_errors


def warm_up() -> None:
    """Build the validators the checks use (importing jsonschema takes seconds: do it early,
    in a thread, while the scenarios run)."""
    for name in ("log-record.json", "manifest.json", "bus-message.json#/$defs/Heartbeat"):
        contract_errors(name, None)  # building the validator is the cost, not this check


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
    return contract_errors(f"bus-message.json#/$defs/{branches[kind]}", message)
