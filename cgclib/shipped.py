"""Results that ship with the book: content-keyed files in `data/<folder>`, each checked
against the sha256 in the folder's manifest, with a local cache beside them.

A chapter's expensive results (the replicate runs of `cgclib.replicates`, the tables of
`cgclib.tables`) are stored under a key that hashes everything they depend on. A key found
in the shipped folder is used after its sha256 is checked (a mismatch is an error naming the
file: a shipped result that was edited by hand must not pass silently); a key found in the
local cache (`.cache/<folder>`) is used as it is; a miss is computed by the same code and
written to the local cache. Shipping copies named entries of the local cache into the
shipped folder and rewrites its manifest; entries grouped under other top-level folders (other
chapters) stay as they are.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from .models import sha256_file
from .paths import cache_dir, data_dir
from .storage import atomic_write_bytes

MANIFEST = "manifest.json"


class ShippedFileError(ValueError):
    """A shipped file that is missing or does not match its manifest."""


class ShippedStore:
    """Content-keyed files shipped in `data/<folder>` and cached in `.cache/<folder>`; a file
    is named by a path relative to the folder, whose first part groups it (a chapter)."""

    def __init__(self, folder: str):
        self.folder = folder

    @property
    def shipped_dir(self) -> Path:
        return data_dir() / self.folder

    @property
    def local_dir(self) -> Path:
        return cache_dir() / self.folder

    def _manifest(self) -> dict[str, str]:
        path = self.shipped_dir / MANIFEST
        return json.loads(path.read_text()) if path.is_file() else {}

    def find(self, relative: str) -> Path | None:
        """The stored file: shipped (checked against the manifest) or cached; None on a miss."""
        expected = self._manifest().get(relative)
        if expected is not None:
            path = self.shipped_dir / relative
            if not path.is_file() or sha256_file(path) != expected:
                raise ShippedFileError(
                    f"{path} is missing or does not match its sha256 in {self.shipped_dir / MANIFEST}; "
                    "restore it from git or rebuild the shipped results (`make replicates`)"
                )
            return path
        path = self.local_dir / relative
        return path if path.is_file() else None

    def put(self, relative: str, data: bytes) -> Path:
        """Write a computed file to the local cache, atomically."""
        return atomic_write_bytes(self.local_dir / relative, data)

    def ship(self, groups: Mapping[str, Iterable[str]]) -> int:
        """Make each named group's shipped files exactly the listed ones (taken from the local
        cache, or the shipped folder where they already are); other groups stay as they are.
        The manifest is rewritten; the number of files it lists."""
        destination = self.shipped_dir
        destination.parent.mkdir(parents=True, exist_ok=True)
        old = self._manifest()
        kept = {rel: sha for rel, sha in old.items() if rel.split("/", 1)[0] not in groups}
        tmp = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}."))
        manifest = {}
        try:
            for relative, sha in kept.items():
                atomic_write_bytes(tmp / relative, (destination / relative).read_bytes())
                manifest[relative] = sha256_file(tmp / relative)
                if manifest[relative] != sha:
                    raise ShippedFileError(f"{destination / relative} does not match its sha256 in the manifest")
            for relatives in groups.values():
                for relative in relatives:
                    source = self.local_dir / relative
                    if not source.is_file():
                        source = destination / relative
                    atomic_write_bytes(tmp / relative, source.read_bytes())
                    manifest[relative] = sha256_file(tmp / relative)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
            if destination.exists():
                shutil.rmtree(destination)
            tmp.rename(destination)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return len(manifest)
