"""The schemas' if/then/else reach the generated models: ``from_state`` is required on
every state change after the first and absent on the first, for the models as for
jsonschema (the model generator drops if/then; codegen turns it into a table)."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from baqup_agent.contract import AgentState, StateChange
from baqup_agent.contract.tables import CONDITIONAL_FIELDS
from baqup_schema.contract_schemas import contract_validator

STATES = list(AgentState)


def message(to_state: AgentState, from_state: AgentState | None) -> dict[str, object]:
    data: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "seq": 0,
        "type": "state_change",
        "job_id": "job-1",
        "agent_id": "agent-1",
        "timestamp": "2026-11-30T12:00:00Z",
        "to_state": str(to_state),
    }
    if from_state is not None:
        data["from_state"] = str(from_state)
    return data


def test_the_table_comes_from_the_schema() -> None:
    assert CONDITIONAL_FIELDS["StateChange"] == ("to_state", "initializing", "from_state")


@given(st.sampled_from(STATES), st.none() | st.sampled_from(STATES))
def test_models_and_jsonschema_agree_on_from_state(
    to_state: AgentState, from_state: AgentState | None
) -> None:
    data = message(to_state, from_state)
    schema_ok = contract_validator("bus-message.json").is_valid(data)
    try:
        StateChange.model_validate_json(json.dumps(data))
        model_ok = True
    except ValidationError:
        model_ok = False
    assert model_ok == schema_ok
    assert schema_ok == ((to_state is AgentState.INITIALIZING) == (from_state is None))


@pytest.mark.parametrize("to_state", [s for s in STATES if s is not AgentState.INITIALIZING])
def test_a_later_state_change_without_from_state_names_the_field(to_state: AgentState) -> None:
    with pytest.raises(ValidationError, match="from_state is required"):
        StateChange.model_validate_json(json.dumps(message(to_state, None)))
