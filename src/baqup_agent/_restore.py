"""Reading a published output (contract sections 4 and 7): manifest, checksums, artifacts.

``PublishedOutput.open`` validates ``manifest.json`` (JSON Schema and model) and every
artifact name; ``verify()`` checks every artifact's size and checksum. Both raise
``DataError`` (exit 65) naming what is wrong. A restore verifies the whole output
before it writes anything to its target.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from pydantic import ValidationError

from baqup_agent._artifacts import open_decompressed
from baqup_agent._checksum import file_checksum, new_hash
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
        size, digest = file_checksum(fd, artifact.checksum_algorithm.value)  # closes fd
        if size != artifact.size_bytes or digest != artifact.checksum_value:
            raise DataError(
                f"{self.path}: checksum mismatch for {name}: "
                f"{artifact.checksum_algorithm.value} {digest}, "
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
