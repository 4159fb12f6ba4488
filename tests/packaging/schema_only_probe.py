"""Run by test_distributions.py in a fresh venv holding only the baqup-schema wheel and its
dependencies: validate and load an agent config, print what happened as one JSON line.

argv[1] is an agent schema (merged with the base contract, as baqup-agent does).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import sys

from baqup_schema import ConfigError, Secret, config_schema, load_from_env, validate

SECRET = "hunter2-not-in-output"


def main() -> None:
    schema = config_schema(sys.argv[1])
    base = {"BAQUP_AGENT_ID": "fs-1", "BAQUP_ROLE": "backup", "BAQUP_STAGING_DIR": "/tmp/s"}
    good = validate(schema, {**base, "BAQUP_JOB_ID": "job-1", "BAQUP_FS_SOURCE": "/data"})
    bad = validate(schema, {**base, "BAQUP_FS_ZSTD_LEVEL": 99})

    url = f"redis://:{SECRET}@127.0.0.1:6379/0"
    os.environ.update(base, BAQUP_JOB_ID="job-1", BAQUP_FS_SOURCE="/data", BAQUP_REDIS_URL=url)
    loaded = load_from_env(schema)
    os.environ.update(BAQUP_ROLE="sideways", BAQUP_REDIS_URL=f"http://:{SECRET}@127.0.0.1/")
    try:
        load_from_env(schema)
        problems, exit_code, text = [], None, ""
    except ConfigError as exc:
        problems, exit_code, text = [p.variable for p in exc.problems], int(exc.exit_code), str(exc)

    dists = {
        d.metadata["Name"].lower().replace("_", "-") for d in importlib.metadata.distributions()
    }
    modules = ("redis", "zstandard", "baqup_agent")
    report = {
        "good": [good.valid, [e.path for e in good.errors]],
        "bad": [bad.valid, sorted([e.path, e.keyword] for e in bad.errors)],
        "loaded": {
            "secret": isinstance(loaded["BAQUP_REDIS_URL"], Secret),
            "threads": loaded["BAQUP_FS_THREADS"],
        },
        "env_error": {
            "variables": sorted(problems),
            "exit_code": exit_code,
            "quotes_secret": SECRET in text,
        },
        "distributions": sorted(dists),
        "importable": {m: importlib.util.find_spec(m) is not None for m in modules},
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
