"""Property-based conformance: jsonschema and the generated types agree.

For every schema file and every ``$defs`` entry (see ``_schemas.TARGETS``):

- valid instances generated from the schema (hypothesis-jsonschema) are accepted by the
  generated type, round-trip through ``model_dump(mode="json")`` to an equal instance
  (after normalisation) that jsonschema accepts again;
- invalid instances, made from a valid one by one edit the schema forbids (required
  field dropped, wrong type, unknown field, enum value outside the set, bound crossed,
  pattern or format broken), are rejected by both.

Enum schemas have fewer than 200 values: all of them are checked, and 200 generated
non-members. Any disagreement fails; the rules the config model does not express are
pinned in ``test_config_rules_checked_by_jsonschema_only``.
"""

from __future__ import annotations

import functools
import json
import warnings
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisWarning
from hypothesis_jsonschema import from_schema
from pydantic import ValidationError

from tests.contract._schemas import (
    CONFIG_ONLY_JSONSCHEMA,
    SCHEMAS,
    TARGETS,
    Target,
    apply,
    edits,
    normalise,
    target,
    validator,
)

EXAMPLES = 200
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    # generation limits, not disagreements: never a reason to fail
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

CUSTOM_FORMATS = {
    # hypothesis-jsonschema generates "" for uuid; upper case is valid too
    "uuid": st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper()),
    # its uri strategy never matches config.json's ^rediss?:// pattern
    "uri": st.builds(
        "{}://{}{}:{}/{}".format,
        st.sampled_from(["redis", "rediss"]),
        st.sampled_from(["", "user:pass@", ":p%40ss@"]),
        st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True),
        st.integers(1, 65535),
        st.integers(0, 15),
    ),
    "path": st.from_regex(r"/[A-Za-z0-9._/-]{0,40}", fullmatch=True),
}


# Longer arrays only repeat the per-item checks at a high generation cost.
MAX_ITEMS = 3


def _bounded(schema: Any) -> Any:
    """``schema`` with arrays capped at MAX_ITEMS items, for generation only."""
    if isinstance(schema, list):
        return [_bounded(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _bounded(v) for k, v in schema.items()}
    if out.get("type") == "array":
        out["maxItems"] = min(out.get("maxItems", MAX_ITEMS), MAX_ITEMS)
    return out


@functools.cache
def _strategy(t: Target) -> st.SearchStrategy[Any]:
    """Valid instances of ``t`` (built once: from_schema canonicalises the schema)."""
    with warnings.catch_warnings():
        # overriding the standard uri format is deliberate (see CUSTOM_FORMATS)
        warnings.simplefilter("ignore", HypothesisWarning)
        return from_schema(_bounded(t.inlined), custom_formats=CUSTOM_FORMATS)


def _rejected(t: Target, instance: Any) -> bool:
    try:
        t.validate_json(json.dumps(instance))
    except ValidationError:
        return True
    return False


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)

OBJECTS = [t for t in TARGETS if t.enum is None]
ENUMS = [t for t in TARGETS if t.enum is not None]


def _check_valid(t: Target, instance: Any) -> None:
    """One valid instance: accepted by both, round trip equal and valid again."""
    check = validator(t.schema)
    check.validate(instance)
    value = t.validate_json(json.dumps(instance))
    options = {"exclude_unset": True} if t.is_model else {}
    dumped = t.dump(value, **options)
    check.validate(dumped)
    assert normalise(dumped) == normalise(instance)
    assert t.validate_json(json.dumps(dumped)) == value
    if t.is_model:
        # the form the runtime writes: defaults filled in, absent optionals left out
        check.validate(t.dump(value, exclude_none=True))


def _kinds_possible(schema: dict[str, Any]) -> set[str]:
    """Edit kinds that every valid instance of ``schema`` offers at its top level."""
    branches = schema.get("oneOf", [schema])
    kinds = {"type"}
    if all(b.get("required") for b in branches):
        kinds.add("required")
    if all(b.get("additionalProperties") is False for b in branches):
        kinds.add("unknown field")
    return kinds


@pytest.mark.parametrize("t", OBJECTS, ids=[t.id for t in OBJECTS])
def test_generated_instances_agree(t: Target) -> None:
    """Each example: one valid instance, then the same instance broken by one edit."""
    valid: list[Any] = []
    kinds: list[str] = []

    @SETTINGS
    @given(st.data())
    def run(data: st.DataObject) -> None:
        instance = data.draw(_strategy(t), label="valid")
        _check_valid(t, instance)
        valid.append(instance)
        candidates = list(edits(t.inlined, instance))
        # kind first, so that every kind is tried however many fields offer one
        kind = data.draw(st.sampled_from(sorted({e[0] for e in candidates})), label="kind")
        edit = data.draw(st.sampled_from([e for e in candidates if e[0] == kind]), label="edit")
        broken = apply(instance, edit)
        assert not validator(t.schema).is_valid(broken), f"edit {edit} left it valid"
        assert _rejected(t, broken), f"the generated type accepted {edit}: {broken!r}"
        kinds.append(edit[0])

    run()
    assert len(valid) >= EXAMPLES
    assert len(kinds) >= EXAMPLES
    assert _kinds_possible(t.inlined) <= set(kinds)


@pytest.mark.parametrize("t", ENUMS, ids=[t.id for t in ENUMS])
def test_enum_values_agree(t: Target) -> None:
    assert t.enum is not None
    for value in t.enum:  # the whole instance space: stronger than sampling it
        _check_valid(t, value)


@pytest.mark.parametrize("t", ENUMS, ids=[t.id for t in ENUMS])
def test_enum_non_members_rejected_by_both(t: Target) -> None:
    seen: list[Any] = []
    assert t.enum is not None
    check = validator(t.schema)
    near = [True, False, None, "0", str(t.enum[0]).upper() + "x", [t.enum[0]], 1.5]
    # 2.0 is the integer 2 for JSON Schema, hence the filter: see test_integral_floats
    non_members = (st.sampled_from(near) | JSON_VALUES).filter(lambda v: not check.is_valid(v))

    @SETTINGS
    @given(non_members)
    def run(value: Any) -> None:
        assert _rejected(t, value), f"the generated type accepted {value!r}"
        seen.append(value)

    run()
    assert len(seen) >= EXAMPLES


def test_config_rules_checked_by_jsonschema_only() -> None:
    """BaseConfig cannot express if/then, and checks BAQUP_REDIS_URL's pattern but not
    its uri format; config.py validates with jsonschema at load time, the model is for
    typed access. Pinned so that the gap stays documented and does not grow."""
    t = target("config.json", None)
    check = validator(t.schema)
    base = {"BAQUP_JOB_ID": "job-1", "BAQUP_AGENT_ID": "a-1", "BAQUP_ROLE": "backup"}
    cases = {
        "if/then": {**base, "BAQUP_ROLE": "restore"},
        "format uri": {**base, "BAQUP_REDIS_URL": "redis://bad host:6379/0"},
    }
    assert set(cases) == set(CONFIG_ONLY_JSONSCHEMA)
    for case in cases.values():
        assert not check.is_valid(case)
        t.validate_json(json.dumps(case))


def test_integral_floats() -> None:
    """JSON Schema counts 2.0 as the integer 2; the strict models take integers written
    as integers only (producers write ``2``). Documented in docs/contract.md §3."""
    result = {**SCHEMAS["bus-message.json"]["examples"][2], "seq": 9.0, "exit_code": 0.0}
    assert validator(target("bus-message.json", None).schema).is_valid(result)
    assert _rejected(target("bus-message.json", None), result)


@pytest.mark.parametrize("bad", ["a\x00b", "", "/" + "a" * 4096])
@pytest.mark.parametrize("variable", ["BAQUP_STAGING_DIR", "BAQUP_SPOOL_DIR"])
def test_path_format_judged_alike_by_runtime_reference_and_model(variable: str, bad: str) -> None:
    from baqup_agent._errors import ConfigError
    from baqup_agent.config import load_config

    config = {"BAQUP_JOB_ID": "job-1", "BAQUP_AGENT_ID": "a-1", "BAQUP_ROLE": "backup"}
    broken = {**config, variable: bad}
    t = target("config.json", None)
    assert validator(t.schema).is_valid(config)
    assert not validator(t.schema).is_valid(broken)
    assert _rejected(t, broken)
    if bad:  # the environment cannot hold an empty value apart from unset
        with pytest.raises(ConfigError, match=variable):
            load_config(environ={**config, variable: bad})
