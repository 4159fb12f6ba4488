"""Base class of every generated contract model (hand-written, not generated)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ContractModel(BaseModel):
    """Shared configuration of the models generated from ``schema/``.

    ``strict``: bus messages and manifests are validated as JSON Schema validates
    them (no ``"1"`` for an integer); environment strings are coerced *before*
    they reach a model. ``python-re`` makes ``pattern`` behave as in jsonschema.
    ``defer_build`` keeps ``import baqup_agent`` cheap: a model's validator is
    built on first use.
    """

    model_config = ConfigDict(
        strict=True,
        regex_engine="python-re",
        defer_build=True,
        populate_by_name=True,
    )
