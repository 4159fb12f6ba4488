"""Reading a published output (contract sections 4 and 7): manifest, checksums, artifacts.

``PublishedOutput.open`` validates ``manifest.json`` (JSON Schema and model) and every
artifact name; ``verify()`` checks every artifact's size and checksum. Both raise
``DataError`` (exit 65) naming what is wrong. A restore verifies the whole output
before it writes anything to its target; ``start_early_checksums`` hashes the artifacts
while the agent starts, for the verification to take (see the section at the end).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from pydantic import ValidationError

from baqup_agent._artifacts import open_decompressed
from baqup_agent._checksum import file_checksum, new_hash
from baqup_agent._config import early_restore_source
from baqup_agent._errors import ConfigError, DataError
from baqup_agent._paths import is_artifact_filename, open_regular, safe_join
from baqup_agent.contract import Artifact, Manifest
from baqup_agent.contract.wire import MANIFEST_FILE as MANIFEST_NAME

# A manifest lists artifacts, not data: anything larger is not one of ours.
MANIFEST_MAX_BYTES = 64 << 20


class PublishedOutput:
    """A published output directory: its validated manifest, verification and readers."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        self.path = path
        self.manifest = manifest
        self.verified = False
        self._by_name = {a.filename: a for a in manifest.artifacts}

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> PublishedOutput:
        """Read and validate ``<path>/manifest.json``; ``DataError`` when it is not valid.

        Checks: a regular file (not a symlink, FIFO, device or directory: never a
        blocking open) of at most ``MANIFEST_MAX_BYTES``, JSON, valid against
        schema/manifest.json and the ``Manifest`` model, artifact names safe and unique,
        not ``manifest.json``, each digest as long as its algorithm's. A ``path`` that
        does not exist is a ``ConfigError`` (exit 64): the job names a wrong source.
        """
        # Absolute once: every later check and open works on the same path, whatever
        # the working directory (a relative source would otherwise be resolved twice).
        root = Path(os.path.abspath(path))
        if not os.path.lexists(root):
            raise ConfigError(f"restore source {root} does not exist")
        data = _read_manifest(root / MANIFEST_NAME)
        try:
            document = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise DataError(f"{root / MANIFEST_NAME}: not JSON: {exc}") from None
        from baqup_schema import contract_errors

        problems = contract_errors("manifest.json", document)
        if problems:
            raise DataError(f"{root / MANIFEST_NAME}: invalid manifest: {'; '.join(problems)}")
        try:
            manifest = Manifest.model_validate_json(data)
        except ValidationError as exc:
            raise DataError(f"{root / MANIFEST_NAME}: invalid manifest: {exc}") from None
        seen: set[str] = set()
        for artifact in manifest.artifacts:
            name = artifact.filename
            if not is_artifact_filename(name) or name == MANIFEST_NAME or name in seen:
                raise DataError(f"{root / MANIFEST_NAME}: unsafe or duplicate artifact {name!r}")
            seen.add(name)
            expected = len(new_hash(artifact.checksum_algorithm.value).hexdigest())
            if len(artifact.checksum_value) != expected:
                raise DataError(
                    f"{root / MANIFEST_NAME}: {name}: a {artifact.checksum_algorithm.value} "
                    f"digest has {expected} hex digits, not {len(artifact.checksum_value)}"
                )
        return cls(root, manifest)

    def verify(self, *, strict: bool = False) -> None:
        """Check every artifact: a regular file with the manifest's size and checksum.

        Raises ``DataError`` naming the first artifact that is missing, not a regular
        file, reached through a symlink, or has another size or checksum. Files the
        manifest does not list are ignored (nothing reads them), unless ``strict``:
        then any other entry is a ``DataError`` too.
        """
        for artifact in self.manifest.artifacts:
            self._verify_one(artifact)
        if strict:
            self._check_no_extras()
        self.verified = True

    def checked_metadata(
        self, schema: Mapping[str, Any] | str | os.PathLike[str]
    ) -> dict[str, Any]:
        """The manifest's ``source_metadata`` (``{}`` when absent), checked against
        ``schema`` (a JSON Schema mapping or the path of a JSON file).

        The manifest is input from outside: an agent validates the metadata it relies
        on before using it. Raises ``DataError`` (exit 65) naming up to three problems.
        """
        import jsonschema

        if not isinstance(schema, Mapping):
            schema = orjson.loads(Path(schema).read_bytes())
        metadata = self.manifest.source_metadata or {}
        validator = jsonschema.Draft202012Validator(schema)
        errors = sorted(validator.iter_errors(metadata), key=lambda e: list(e.path))
        if errors:
            problems = "; ".join(
                f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
                for e in errors[:3]
            )
            raise DataError(f"{self.path / MANIFEST_NAME}: invalid source_metadata: {problems}")
        return dict(metadata)

    def artifact(self, filename: str) -> Artifact:
        """The manifest's entry for ``filename``; ``DataError`` when it lists none."""
        try:
            return self._by_name[filename]
        except KeyError:
            raise DataError(f"{self.path}: the manifest lists no artifact {filename!r}") from None

    def open_artifact(self, filename: str) -> BinaryIO:
        """A streaming reader of ``filename``'s original bytes (decompressed).

        The first call verifies the whole output unless ``verify()`` already did, so
        no bytes are handed out before every checksum was checked.
        """
        artifact = self.artifact(filename)
        if not self.verified:
            self.verify()
        path = safe_join(self.path, artifact.filename)
        return open_decompressed(path, artifact.compression.value if artifact.compression else None)

    # -- internals --------------------------------------------------------------------------

    def _verify_one(self, artifact: Artifact) -> None:
        name = artifact.filename
        path = safe_join(self.path, name)
        try:
            fd = open_regular(path)
        except FileNotFoundError:
            raise DataError(f"{self.path}: artifact {name} is missing") from None
        except DataError as exc:
            raise DataError(f"{self.path}: artifact {name}: {exc}") from None
        try:
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        if st.st_size != artifact.size_bytes:
            os.close(fd)
            raise DataError(
                f"{self.path}: artifact {name} has {st.st_size} bytes, "
                f"the manifest says {artifact.size_bytes}"
            )
        algorithm = artifact.checksum_algorithm.value
        early = _take_early(name, st, algorithm)
        if early is None:
            size, digest = file_checksum(fd, algorithm)  # closes fd
        else:  # this very file, unchanged, hashed while the agent started
            os.close(fd)
            size, digest = early
        if size != artifact.size_bytes or digest != artifact.checksum_value:
            raise DataError(
                f"{self.path}: checksum mismatch for {name}: "
                f"{algorithm} {digest}, "
                f"the manifest says {artifact.checksum_value}"
            )

    def _check_no_extras(self) -> None:
        expected = {MANIFEST_NAME, *self._by_name}
        parents = {p for name in self._by_name for p in _parents(name)}
        for dirpath, dirnames, filenames in os.walk(self.path):
            for name in [*dirnames, *filenames]:
                relative = Path(dirpath, name).relative_to(self.path).as_posix()
                if relative not in expected and relative not in parents:
                    raise DataError(f"{self.path}: unexpected entry {relative!r}")


def _parents(filename: str) -> list[str]:
    parts = filename.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _read_manifest(path: Path) -> bytes:
    try:
        fd = open_regular(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no manifest: not a published output") from None
    except DataError as exc:
        raise DataError(f"the manifest is not a regular file: {exc}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read the manifest: {exc}") from None
    with os.fdopen(fd, "rb") as f:
        data = f.read(MANIFEST_MAX_BYTES + 1)
    if len(data) > MANIFEST_MAX_BYTES:
        raise DataError(f"{path}: the manifest is larger than {MANIFEST_MAX_BYTES} bytes")
    return data


# -- checksums computed while the agent starts -----------------------------------------------
#
# A restore verifies every artifact before ``restore()`` sees a byte, and hashing them is
# most of that. ``run_job`` calls ``start_early_checksums`` first, with what the
# environment names (the configuration is not loaded yet): the hashing releases the GIL,
# so it runs on another core while the agent imports and loads its configuration
# (docs/architecture.md, "Start-up cost"). ``_verify_one`` takes a checksum from there
# only for the very file it opened, unchanged (device, inode, size and times); anything
# else it hashes then. Nothing there raises or logs: the verification reports it all.

# (device, inode, size, mtime, ctime, algorithm): the file as it was when hashed
_Key = tuple[int, int, int, int, int, str]
# A change within one tick of the file system's clock may leave the times as they were
# (git's "racily clean" files): a checksum is kept only for a file whose last change
# (ctime) is older than this before the hashing began. 2 s covers the coarsest
# timestamps (FAT, some NFS servers); an artifact restored is rarely younger.
EARLY_RACY_NS = 2 * 10**9


def _key(st: os.stat_result, algorithm: str) -> _Key:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, algorithm)


_early: EarlyChecksums | None = None


def start_early_checksums(environ: Mapping[str, str]) -> None:
    """Start hashing when ``environ`` describes a restore job (``run_job`` calls it
    first, and ``stop_early_checksums`` when the job is over)."""
    global _early
    source = early_restore_source(environ)
    if source is not None:
        _early = EarlyChecksums(os.path.abspath(source))


def stop_early_checksums() -> None:
    """Forget the checksums, and hash no further artifact: the job is over."""
    global _early
    if _early is not None:
        _early.cancel()
    _early = None


def _take_early(name: str, st: os.stat_result, algorithm: str) -> tuple[int, str] | None:
    """``(size, hex digest)`` of artifact ``name``, the file ``st`` describes, if it was
    hashed early, as it is now; waits while it may still be hashed. None: hash it now."""
    early = _early
    return None if early is None else early.take(name, st, algorithm)


class EarlyChecksums:
    """Hashes the artifacts a restore job's manifest lists, on a thread of its own."""

    def __init__(self, source: str, clock: Callable[[], int] = time.time_ns) -> None:
        self._results: dict[_Key, tuple[int, str]] = {}
        self._passed: set[str] = set()  # artifacts hashed or left to the verification
        self._done = False
        self._cancelled = threading.Event()
        self._changed = threading.Condition()
        self._clock = clock  # the file system's clock: ns since the epoch
        self._thread = threading.Thread(
            target=self._run, args=(source,), name="baqup-early-checksums"
        )
        self._thread.daemon = True  # an exit never waits for it
        self._thread.start()

    def take(self, name: str, st: os.stat_result, algorithm: str) -> tuple[int, str] | None:
        """``(size, hex digest)`` of artifact ``name``, the file ``st`` describes, if it
        was hashed as it is now; waits while the thread has yet to pass it."""
        with self._changed:
            while name not in self._passed and not self._done:
                self._changed.wait()
            return self._results.get(_key(st, algorithm))

    def cancel(self) -> None:
        """Hash no further artifact (the one being hashed is finished)."""
        self._cancelled.set()

    def _run(self, source: str) -> None:
        try:
            # whatever is wrong (no manifest, a file missing), the verification reports it
            with contextlib.suppress(Exception):
                for name, algorithm, size in _listed(Path(source)):
                    if self._cancelled.is_set():
                        return
                    hashed = None
                    with contextlib.suppress(Exception):
                        hashed = self._hash(safe_join(source, name), algorithm, size)
                    with self._changed:
                        if hashed is not None:
                            self._results[hashed[0]] = hashed[1]
                        self._passed.add(name)
                        self._changed.notify_all()
        finally:
            with self._changed:
                self._done = True
                self._changed.notify_all()

    def _hash(self, path: Path, algorithm: str, size: int) -> tuple[_Key, tuple[int, str]] | None:
        began = self._clock()
        fd = open_regular(path)
        try:
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        # Changed lately, it may change unseen: the verification hashes it. Another size
        # than the manifest's: the verification refuses it without reading a byte.
        if st.st_ctime_ns >= began - EARLY_RACY_NS or st.st_size != size:
            os.close(fd)
            return None
        return _key(st, algorithm), file_checksum(fd, algorithm)  # closes fd


def _listed(source: Path) -> list[tuple[str, str, int]]:
    """(filename, algorithm, size) of each artifact the manifest lists, as far as it can
    be read: ``PublishedOutput.open`` validates it whole."""
    listed = []
    for artifact in orjson.loads(_read_manifest(source / MANIFEST_NAME))["artifacts"]:
        name, algorithm = artifact["filename"], artifact["checksum_algorithm"]
        size = artifact["size_bytes"]
        if (
            isinstance(name, str)
            and is_artifact_filename(name)
            and isinstance(algorithm, str)
            and type(size) is int
        ):
            listed.append((name, algorithm, size))
    return listed
