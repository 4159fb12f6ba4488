#!/usr/bin/env python3
"""A baqup agent written WITHOUT the SDK: the standard library (and redis-py) only.

It speaks the contract by hand (docs/architecture.md "Wire layout", schema/*.json) to
prove that the conformance suite judges behaviour, not imports. It backs up the
directory PLAIN_SOURCE into one gzip tar artifact and restores it into PLAIN_TARGET.

Its own variables: PLAIN_SOURCE (backup), PLAIN_TARGET (restore), PLAIN_TOKEN (a secret,
also as PLAIN_TOKEN_FILE; only checked for presence), PLAIN_DELAY (seconds to pause after
each file: makes the job last for the suite's SIGTERM, cancel and heartbeat scenarios).

BROKEN=<rule> makes it break exactly one rule of the contract (tests/conformance uses
it to prove that each check catches its rule); see the names in VARIANTS.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import tarfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, quote_plus

VARIANTS = (
    "exit-code", "log-not-json", "log-wrong-id", "illegal-transition", "no-heartbeats",
    "bad-message", "result-twice", "non-atomic", "wrong-checksum", "leak-secret",
    "leak-secret-b64", "sigterm-exit0", "bad-config-exit0", "redis-down-exit0",
    "ignore-cancel", "restore-corrupt", "restore-no-verify", "world-readable",
    "seq-from-1", "heartbeat-after-result", "float-integer", "log-level-ignored",
    "heartbeat-ttl-wrong", "bad-config-bus", "config-error-unnamed", "retryable-wrong",
    "sigterm-exit70", "sigterm-status-failed", "log-on-stdout", "restore-writes-first",
    "stray-file", "result-no-expiry", "manifest-first", "temp-outside", "restore-unsafe",
    "no-from-state", "timestamp-offset", "rerun-redo", "no-job-lock",
)  # fmt: skip
BROKEN = os.environ.get("BROKEN", "")
assert BROKEN in ("", *VARIANTS), f"unknown BROKEN variant {BROKEN!r}"

ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TRANSITIONS = {
    "initializing": {"running", "failed"},
    "running": {"completing", "failed"},
    "completing": {"terminated", "failed"},
    "terminated": set(),
    "failed": set(),
}
RETRYABLE = {0: False, 1: True, 64: False, 65: False, 69: True, 70: False, 73: True,
             74: True, 75: False, 76: True}  # fmt: skip
NAME, VERSION = "plain-agent", "1.0.0"
LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")


def now() -> str:
    stamp = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    return stamp if BROKEN == "timestamp-offset" else stamp.replace("+00:00", "Z")


class Failure(Exception):
    """Ends the job with ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Log:
    """JSON lines on stderr with the required fields; known secrets redacted."""

    def __init__(self, job_id: str, agent_id: str, level: str = "INFO") -> None:
        self.job_id, self.agent_id = job_id, agent_id
        self.secrets: list[str] = []
        self.level = LEVELS.index(level) if level in LEVELS else 2
        if BROKEN == "log-level-ignored":
            self.level = 0

    def hide(self, value: str | None) -> None:
        if value and len(value) >= 3:
            raw = value.encode()
            self.secrets += [value, json.dumps(value)[1:-1], quote(value, safe=""),
                             quote_plus(value), base64.b64encode(raw).decode()]  # fmt: skip

    def __call__(self, level: str, message: str, *, raw: bool = False, **fields: Any) -> None:
        if LEVELS.index(level) < self.level:
            return
        record = {"timestamp": now(), "level": level, "message": message,
                  "job_id": self.job_id, "agent_id": self.agent_id, **fields}  # fmt: skip
        line = json.dumps(record, default=str)
        if not raw:  # raw: the leak-secret variant writes what it was given
            for form in sorted(self.secrets, key=len, reverse=True):
                line = line.replace(form, "[REDACTED]")
        stream = sys.stdout if BROKEN == "log-on-stdout" and level == "INFO" else sys.stderr
        stream.write(line + "\n")
        stream.flush()


def read_secret(env: dict[str, str], name: str, problems: list[str]) -> str | None:
    if name in env and f"{name}_FILE" in env:
        problems.append(f"{name}: set both {name} and {name}_FILE")
        return None
    if f"{name}_FILE" in env:
        try:
            text = Path(env[f"{name}_FILE"]).read_text(encoding="utf-8")
        except OSError as exc:
            problems.append(f"{name}_FILE: cannot read ({exc.strerror})")
            return None
        return text[:-1] if text.endswith("\n") else text
    return env.get(name)


def number(env: dict[str, str], name: str, default: float, low: float, problems: list[str],
           *, exclusive: bool = False) -> float:  # fmt: skip
    try:
        value = float(env.get(name, default))
    except ValueError:
        problems.append(f"{name}: not a number")
        return default
    if value < low or (exclusive and value == low) or value > 3600:
        problems.append(f"{name}: out of range")
        return default
    return value


def load_config(env: dict[str, str]) -> dict[str, Any]:
    problems: list[str] = []
    cfg: dict[str, Any] = {}
    for var in ("BAQUP_JOB_ID", "BAQUP_AGENT_ID"):
        value = env.get(var)
        if not value:
            problems.append(f"{var}: required")
        elif not ID.match(value):
            problems.append(f"{var}: not a valid identifier")
        cfg[var] = value
    cfg["role"] = env.get("BAQUP_ROLE")
    if cfg["role"] not in ("backup", "restore"):
        problems.append("BAQUP_ROLE: must be backup or restore")
    cfg["interval"] = number(env, "BAQUP_HEARTBEAT_INTERVAL", 10, 0, problems, exclusive=True)
    cfg["grace"] = number(env, "BAQUP_GRACE_PERIOD", 30, 0, problems)
    cfg["ttl"] = float(env.get("BAQUP_HEARTBEAT_TTL") or 3 * cfg["interval"])
    if BROKEN == "heartbeat-ttl-wrong":
        cfg["ttl"] = 3 * cfg["interval"]
    cfg["delay"] = float(env.get("PLAIN_DELAY", "0"))
    cfg["staging"] = Path(env.get("BAQUP_STAGING_DIR", "/var/lib/baqup/staging"))
    cfg["spool"] = Path(env.get("BAQUP_SPOOL_DIR") or cfg["staging"] / ".spool")
    cfg["redis_url"] = env.get("BAQUP_REDIS_URL")
    cfg["password"] = read_secret(env, "BAQUP_REDIS_PASSWORD", problems)
    cfg["token"] = read_secret(env, "PLAIN_TOKEN", problems)
    required = {"backup": ["PLAIN_SOURCE"], "restore": ["BAQUP_RESTORE_SOURCE", "PLAIN_TARGET"]}
    for var in required.get(cfg["role"], []):
        if not env.get(var):
            problems.append(f"{var}: required when BAQUP_ROLE is {cfg['role']}")
    cfg["source"] = env.get("PLAIN_SOURCE")
    cfg["target"] = env.get("PLAIN_TARGET")
    cfg["restore_source"] = env.get("BAQUP_RESTORE_SOURCE")
    cfg["problems"] = problems
    return cfg


class Bus:
    """Redis Streams when reachable, else the JSON-lines spool; ids and seq by hand."""

    def __init__(self, cfg: dict[str, Any], log: Log) -> None:
        self.job_id, self.agent_id = cfg["BAQUP_JOB_ID"], cfg["BAQUP_AGENT_ID"]
        self.key = f"baqup:{{{self.job_id}}}"
        self.spool = cfg["spool"] / self.job_id
        self.log = log
        self.lock = threading.Lock()
        self.seq = 1 if BROKEN == "seq-from-1" else 0
        self.redis: Any = None
        if cfg["redis_url"]:
            try:
                import redis

                client = redis.Redis.from_url(cfg["redis_url"], password=cfg["password"],
                                              socket_timeout=2, socket_connect_timeout=1,
                                              decode_responses=True)  # fmt: skip
                client.ping()
                self.redis = client
            except Exception as exc:
                log("WARN", "redis unreachable, spooling", error=type(exc).__name__)

    def send(self, kind: str, ttl: float = 0, **body: Any) -> str:
        with self.lock:
            msg = {"id": str(uuid.uuid4()), "seq": self.seq, "type": kind, "job_id": self.job_id,
                   "agent_id": self.agent_id, "timestamp": now(), **body}  # fmt: skip
            self.seq += 1
            text = json.dumps(msg)
            if self.redis is not None:
                try:
                    pipe = self.redis.pipeline()
                    pipe.xadd(f"{self.key}:events", {"msg": text})
                    if kind == "heartbeat":
                        pipe.set(f"{self.key}:heartbeat", text, px=int(ttl * 1000))
                    if kind == "result":
                        keep = None if BROKEN == "result-no-expiry" else 7 * 86400
                        pipe.set(f"{self.key}:result", text, ex=keep)
                    pipe.execute()
                    return "redis"
                except Exception as exc:
                    self.log("WARN", "redis lost, spooling", error=type(exc).__name__)
                    self.redis = None
            self.spool.mkdir(parents=True, exist_ok=True)
            with (self.spool / "events.jsonl").open("a", encoding="utf-8") as f:
                f.write(text + "\n")
                f.flush()
                os.fsync(f.fileno())
            return "spool"

    def cancelled(self, offset: list[Any]) -> bool:
        """Whether a cancel for this job arrived since ``offset`` (updated in place)."""
        lines: list[str] = []
        if self.redis is not None:
            try:
                reply = self.redis.xread({f"{self.key}:control": offset[0]}, block=100, count=10)
            except Exception:
                return False
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    offset[0] = entry_id
                    lines.append(fields.get("msg", ""))
        else:
            try:
                with (self.spool / "control.jsonl").open("rb") as f:
                    f.seek(offset[1])
                    data = f.read()
            except FileNotFoundError:
                data = b""
            end = data.rfind(b"\n") + 1
            offset[1] += end
            lines = data[:end].decode().splitlines()
            time.sleep(0.05)
        for line in lines:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if (
                isinstance(msg, dict)
                and msg.get("type") == "cancel"
                and msg.get("job_id") == self.job_id
            ):
                return True
        return False


class Job:
    def __init__(self, cfg: dict[str, Any], log: Log) -> None:
        self.cfg, self.log = cfg, log
        self.bus = Bus(cfg, log)
        self.state = ""
        self.stop = threading.Event()  # cancel requested
        self.done = threading.Event()  # threads stop
        self.by_signal = False
        self.bytes_done = self.items_done = 0
        self.work: Path | None = None  # staging directory to remove on failure

    def to(self, state: str) -> None:
        if self.state and state not in TRANSITIONS[self.state] and BROKEN != "illegal-transition":
            raise Failure(70, f"illegal transition {self.state} -> {state}")
        keep_from = self.state and BROKEN != "no-from-state"
        body: dict[str, Any] = {
            "to_state": state,
            **({"from_state": self.state} if keep_from else {}),
        }
        self.state = state
        self.bus.send("state_change", **body)
        self.log("INFO", f"state {state}")

    def progress(self) -> dict[str, Any]:
        done = float(self.bytes_done) if BROKEN == "float-integer" else self.bytes_done
        return {"bytes_done": done, "items_done": self.items_done}

    def heartbeats(self) -> None:
        while True:
            self.bus.send("heartbeat", ttl=self.cfg["ttl"], state=self.state, intent="continuing",
                          interval_seconds=self.cfg["interval"], ttl_seconds=self.cfg["ttl"],
                          progress=self.progress())  # fmt: skip
            if self.done.wait(self.cfg["interval"]):
                return

    def control(self) -> None:
        offset: list[Any] = ["0", 0]
        while not self.done.is_set():
            if self.bus.cancelled(offset) and BROKEN != "ignore-cancel":
                self.log("INFO", "cancel received")
                self.stop.set()
                return

    def checkpoint(self) -> None:
        if self.stop.is_set():
            raise Failure(1, "cancelled")

    def pause(self) -> None:
        if self.cfg["delay"]:
            self.stop.wait(self.cfg["delay"])
        self.checkpoint()

    def backup(self) -> dict[str, Any]:
        cfg = self.cfg
        job_id, staging = cfg["BAQUP_JOB_ID"], cfg["staging"]
        final = staging / job_id
        work = final if BROKEN == "non-atomic" else staging / ".staging" / job_id
        if final.exists():
            raise Failure(73, f"{final} already exists")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        self.work = work
        if BROKEN == "stray-file":
            (staging / "scratch.tmp").write_text("outside .staging/JOB_ID", encoding="utf-8")
        if BROKEN == "temp-outside":  # written and removed: only a watch of the tree sees it
            (staging / "scratch.tmp").write_text("outside .staging/JOB_ID", encoding="utf-8")
            (staging / "scratch.tmp").unlink()
        if BROKEN == "manifest-first":  # a draft manifest before the artifacts
            (work / "manifest.json").write_text("{}", encoding="utf-8")
        source = Path(cfg["source"])
        artifact = work / "data.tar.gz"
        with artifact.open("wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for path in sorted(source.rglob("*")):
                tar.add(path, arcname=path.relative_to(source).as_posix(), recursive=False)
                self.items_done += 1
                self.bytes_done = raw.tell()
                self.pause()
        with artifact.open("rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
            os.fsync(f.fileno())
        size = artifact.stat().st_size
        if BROKEN == "wrong-checksum":
            digest = hashlib.sha256(b"").hexdigest()
        meta: dict[str, Any] = {"files": self.items_done}
        if BROKEN == "leak-secret-b64" and cfg["token"]:
            meta["token_hint"] = base64.b64encode(cfg["token"].encode()).decode()
        manifest = {"version": "1.0", "job_id": job_id, "agent": NAME, "agent_version": VERSION,
                    "role": "backup", "created_at": now(), "source_metadata": meta,
                    "artifacts": [{"filename": artifact.name, "size_bytes": size,
                                   "checksum_algorithm": "sha256", "checksum_value": digest,
                                   "compression": "gzip"}]}  # fmt: skip
        self.bus.send("progress", progress=self.progress(),
                      **({"percent": 100} if BROKEN == "bad-message" else {}))  # fmt: skip
        with (work / "manifest.json").open("w", encoding="utf-8") as f:
            json.dump(manifest, f)
            f.flush()
            os.fsync(f.fileno())
        self.checkpoint()
        if work != final:
            os.rename(work, final)
        fd = os.open(staging, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        self.work = None
        return {"output_path": str(final), "artifacts": 1, "bytes": size}

    def restore(self) -> dict[str, Any]:
        source, target = Path(self.cfg["restore_source"]), Path(self.cfg["target"])
        try:
            manifest = json.loads((source / "manifest.json").read_text(encoding="utf-8"))
            artifacts = manifest["artifacts"]
        except (OSError, ValueError, KeyError) as exc:
            raise Failure(65, f"unreadable manifest: {exc}") from None
        for a in artifacts:
            path = source / a["filename"]
            if ".." in Path(a["filename"]).parts or not path.is_file():
                raise Failure(65, f"bad artifact {a['filename']}")
            digest = hashlib.new(a["checksum_algorithm"], path.read_bytes()).hexdigest()
            if BROKEN == "restore-writes-first":
                self.extract(path, target)
            if digest != a["checksum_value"] and BROKEN != "restore-no-verify":
                raise Failure(65, f"checksum mismatch: {a['filename']}")
        for a in artifacts:
            self.extract(source / a["filename"], target)
        if BROKEN == "restore-corrupt":
            victim = next(p for p in sorted(target.rglob("*")) if p.is_file() and p.stat().st_size)
            victim.write_bytes(b"corrupted by BROKEN=restore-corrupt")
        return {"output_path": str(target)}

    def extract(self, artifact: Path, target: Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        trust: Literal["fully_trusted", "data"] = (
            "fully_trusted" if BROKEN == "restore-unsafe" else "data"
        )
        with tarfile.open(artifact, "r:gz") as tar:
            for member in tar:
                try:
                    tar.extract(member, target, filter=trust)
                except tarfile.TarError as exc:  # an entry escaping the target: bad data
                    raise Failure(65, f"unsafe archive entry: {exc}") from None
                self.items_done += 1
                self.pause()

    def run(self) -> int:
        started = time.monotonic()
        self.to("initializing")
        threads = [threading.Thread(target=self.control, daemon=True)]
        if BROKEN != "no-heartbeats":
            threads.append(threading.Thread(target=self.heartbeats, daemon=True))
        for t in threads:
            t.start()
        status, code, extra, error = "success", 0, {}, ""
        try:
            self.to("running")
            if BROKEN == "leak-secret":
                self.log("DEBUG", "token loaded", raw=True, token=self.cfg["token"])
            extra = self.backup() if self.cfg["role"] == "backup" else self.restore()
            if BROKEN != "illegal-transition":
                self.to("completing")
            self.to("terminated")
        except Exception as exc:
            code = exc.code if isinstance(exc, Failure) else 74 if isinstance(exc, OSError) else 70
            status = "cancelled" if self.stop.is_set() and code == 1 else "failed"
            if status == "cancelled" and self.by_signal and BROKEN == "sigterm-exit0":
                code = 0
            if status == "cancelled" and self.by_signal and BROKEN == "sigterm-exit70":
                code = 70
            if status == "cancelled" and self.by_signal and BROKEN == "sigterm-status-failed":
                status = "failed"
            error = f"{type(exc).__name__}: {exc}"
            self.log("ERROR", "job failed", error=error)
            if self.work is not None:
                shutil.rmtree(self.work, ignore_errors=True)
            self.to("failed")
        self.done.set()
        for t in threads:
            t.join(timeout=2)
        retryable = RETRYABLE[code] != (BROKEN == "retryable-wrong")
        result = {"status": status, "exit_code": code, "retryable": retryable,
                  "duration_seconds": round(time.monotonic() - started, 3), **extra,
                  **({"error": error} if error else {})}  # fmt: skip
        where = self.bus.send("result", **result)
        if BROKEN == "result-twice":
            self.bus.send("result", **result)
        if BROKEN == "heartbeat-after-result":
            self.bus.send("heartbeat", ttl=self.cfg["ttl"], state=self.state, intent="continuing",
                          interval_seconds=self.cfg["interval"], ttl_seconds=self.cfg["ttl"],
                          progress=self.progress())  # fmt: skip
        if code == 0 and where == "spool" and self.cfg["redis_url"]:
            code = 0 if BROKEN == "redis-down-exit0" else 75
        if code == 0 and BROKEN == "exit-code":
            code = 3
        self.log("INFO", "exit", code=code)
        return code


def claim_job(cfg: dict[str, Any], log: Log) -> int | None:
    """Hold the job's lock for the process's life (73 without it); 0 when the job's
    output is already published and its artifacts have their listed sizes."""
    import fcntl

    locks = cfg["staging"] / ".staging" / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    fd = os.open(locks / cfg["BAQUP_JOB_ID"], os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if BROKEN != "no-job-lock":
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log("ERROR", "another run of this job holds its lock")
        return 73
    final = cfg["staging"] / cfg["BAQUP_JOB_ID"]
    if BROKEN == "rerun-redo" or not final.exists():
        return None
    try:
        manifest = json.loads((final / "manifest.json").read_text())
        ok = all((final / a["filename"]).stat().st_size == a["size_bytes"]
                 for a in manifest["artifacts"])  # fmt: skip
    except (OSError, ValueError, KeyError):
        ok = False
    log("INFO" if ok else "ERROR", "job already complete" if ok else "output does not verify")
    return 0 if ok else 65


def main() -> int:
    os.umask(0o022 if BROKEN == "world-readable" else 0o077)
    cfg = load_config(dict(os.environ))
    job_id = cfg["BAQUP_JOB_ID"] if cfg["BAQUP_JOB_ID"] and ID.match(cfg["BAQUP_JOB_ID"]) else None
    agent_id = (
        cfg["BAQUP_AGENT_ID"] if cfg["BAQUP_AGENT_ID"] and ID.match(cfg["BAQUP_AGENT_ID"]) else None
    )
    log = Log(job_id or "unknown", agent_id or "unknown", os.environ.get("BAQUP_LOG_LEVEL", "INFO"))
    log.hide(cfg["password"])
    log.hide(cfg["token"])
    if cfg["redis_url"]:
        log.hide(cfg["redis_url"])
    log("DEBUG", "configuration read", role=cfg["role"])
    if cfg["problems"]:
        problems = cfg["problems"]
        if BROKEN == "config-error-unnamed":
            problems = ["a setting is wrong"] * len(problems)
        log("ERROR", "invalid configuration", errors=problems)
        if BROKEN == "bad-config-bus" and job_id and agent_id:
            Bus(cfg, log).send("state_change", to_state="initializing")  # valid, but sent
        return 0 if BROKEN == "bad-config-exit0" else 64
    if BROKEN == "log-not-json":
        sys.stderr.write("plain agent starting\n")
    if BROKEN == "log-wrong-id":
        Log(cfg["BAQUP_JOB_ID"], "someone-else")("INFO", "hello")
    if cfg["role"] == "backup":  # contract 4.7: one job id, many starts
        code = claim_job(cfg, log)
        if code is not None:
            return code
    job = Job(cfg, log)

    def on_signal(signum: int, frame: object) -> None:
        job.by_signal = True
        job.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return job.run()


if __name__ == "__main__":
    sys.exit(main())
