"""schema/wire.json is the wire layout: the runtime builds its keys and paths from the
generated ``contract.wire``, and the docs' tables say what it says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from baqup_agent._keys import default_spool_dir, job_keys
from baqup_agent._spool import Spool
from baqup_agent._staging import JobLock
from baqup_agent.contract import wire
from tests.contract._schemas import ROOT, SCHEMAS

DOCS = ["docs/bus.md", "docs/architecture.md", "docs/contract.md"]
_ROW = re.compile(r"^\s*\| `([^`]+)` \| ([^|]+) \|(.*)$", re.MULTILINE)
_DAY = 24 * 3600


def _rows(doc: str) -> dict[str, list[str]]:
    text = (ROOT / doc).read_text(encoding="utf-8")
    return {
        m[1]: [m[2].strip(), *(c.strip() for c in m[3].split("|"))] for m in _ROW.finditer(text)
    }


def test_generated_layout_is_the_schema() -> None:
    schema = SCHEMAS["wire.json"]
    assert schema["required"] == [wire.STREAM_FIELD]
    assert [k.template for k in wire.REDIS_KEYS.values()] == [
        k["template"] for k in schema["x-redis-keys"].values()
    ]
    assert int(schema["x-spool"]["dir-mode"], 8) == wire.SPOOL_DIR_MODE
    assert schema["x-result-retention-seconds"] == wire.RESULT_RETENTION_SECONDS


@pytest.mark.parametrize("job_id", ["job-1", "a", "Job_2026.11.27-x"])
def test_runtime_keys_and_paths_follow_the_layout(tmp_path: Path, job_id: str) -> None:
    keys = job_keys(job_id)._asdict()
    assert set(keys) == set(wire.REDIS_KEYS)
    for name, key in keys.items():
        assert key == wire.REDIS_KEYS[name].template.replace(wire.JOB_ID_PLACEHOLDER, job_id)
        assert f"{{{job_id}}}" in key  # the hash tag: one cluster slot per job
    spool_root = default_spool_dir(None, str(tmp_path))
    assert spool_root == tmp_path / wire.SPOOL_SUBDIR
    spool = Spool(spool_root, job_id)
    assert spool.events_path == spool_root / job_id / wire.SPOOL_EVENTS_FILE
    assert spool.control_path == spool_root / job_id / wire.SPOOL_CONTROL_FILE
    lock = JobLock(tmp_path, job_id)
    assert lock.path == tmp_path / wire.STAGING_SUBDIR / wire.LOCKS_SUBDIR / job_id


@pytest.mark.parametrize("doc", DOCS)
def test_docs_tables_match_the_wire_schema(doc: str) -> None:
    rows = _rows(doc)
    keys = {name for name in rows if name.startswith("baqup:")}
    assert keys == {k.template for k in wire.REDIS_KEYS.values()}, doc
    for key in wire.REDIS_KEYS.values():
        kind, writer, content = rows[key.template][:3]
        assert kind.startswith(key.type.split(" with ")[0]), (doc, key.template, kind)
        assert writer == key.writer, (doc, key.template)
        if key.type == "stream":
            assert f"field `{wire.STREAM_FIELD}`" in content, (doc, key.template)
    days = wire.RESULT_RETENTION_SECONDS // _DAY
    result = " ".join(rows[wire.REDIS_KEYS["result"].template])
    assert f"{days} days" in result, doc
    spool = {name for name in rows if name.startswith("SPOOL/JOB_ID/")}
    files = {wire.SPOOL_EVENTS_FILE, wire.SPOOL_REPLAYED_FILE, wire.SPOOL_CONTROL_FILE}
    assert spool == {f"SPOOL/JOB_ID/{f}" for f in files}, doc
    text = (ROOT / doc).read_text(encoding="utf-8")
    assert f"$BAQUP_STAGING_DIR/{wire.SPOOL_SUBDIR}" in text, doc


def test_bus_doc_states_the_generated_modes_and_retention() -> None:
    text = (ROOT / "docs/bus.md").read_text(encoding="utf-8")
    assert f"mode {wire.SPOOL_DIR_MODE:04o}, files {wire.SPOOL_FILE_MODE:04o}" in text
    assert f"same {wire.RESULT_RETENTION_SECONDS // _DAY}-day" in text
