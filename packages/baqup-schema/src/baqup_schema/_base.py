"""Base class of every generated contract model (hand-written, not generated)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, model_validator


class ContractModel(BaseModel):
    """Shared configuration of the models generated from ``schema/``.

    ``strict``: bus messages and manifests are validated as JSON Schema validates
    them (no ``"1"`` for an integer); environment strings are coerced *before*
    they reach a model. ``python-re`` makes ``pattern`` behave as in jsonschema.
    ``defer_build`` keeps ``import baqup_schema`` cheap: a model's validator is
    built on first use.
    """

    model_config = ConfigDict(
        strict=True,
        regex_engine="python-re",
        defer_build=True,
        populate_by_name=True,
        # a field whose JSON name is not a Python name ("pass") is written by that name
        serialize_by_alias=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _no_json_null(cls, data: Any, info: ValidationInfo) -> Any:
        """Reject JSON ``null`` for a field, as jsonschema does: no schema property is
        nullable. Python callers may still pass ``None`` for an absent optional field."""
        if info.mode == "json" and isinstance(data, dict):
            nulls = sorted(k for k, v in data.items() if v is None and k in cls.model_fields)
            if nulls:
                raise ValueError(f"null is not allowed for {', '.join(nulls)}")
        return data

    @model_validator(mode="after")
    def _conditional_fields(self) -> ContractModel:
        """The schemas' if/then/else (``from_state`` on every state change after the
        first), from the generated ``CONDITIONAL_FIELDS``: the model generator drops
        if/then, and the models must reject what jsonschema rejects."""
        from baqup_schema.contract.tables import CONDITIONAL_FIELDS

        rule = CONDITIONAL_FIELDS.get(type(self).__name__)
        if rule is not None:
            field, value, other = rule
            required = getattr(self, field) != value
            if required != (getattr(self, other, None) is not None):
                need = "required" if required else "not allowed"
                raise ValueError(f"{other} is {need} when {field} is {getattr(self, field)}")
        return self
