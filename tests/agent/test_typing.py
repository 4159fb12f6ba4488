"""The public API accepts what ``open()`` and ``subprocess.Popen`` return (mypy --strict)."""

from __future__ import annotations

from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[2]


def test_public_signatures_take_stdlib_file_objects() -> None:
    out, err, status = api.run(
        [
            "--strict",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            str(Path(__file__).with_name("typed_usage.py")),
        ]
    )
    assert status == 0, out + err
