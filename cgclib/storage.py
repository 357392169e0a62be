"""Atomic file writes: a reader never sees a half-written result.

Every result file is written to a temporary file in the same folder and then renamed over
the target (`os.replace` is atomic on POSIX and Windows), so an interrupted run leaves
either the old complete file or the new complete file, never a truncated one. Cached
results that several runs at once may need (chapters executed side by side, sweep jobs on
one machine) are computed under `computed_once`, so that only one of them computes each.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it; restored at once
    os.umask(mask)
    return mask


UMASK = _read_umask()  # read once, at import: setting it is not thread-safe


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` atomically, creating parent folders. The file gets the
    permissions a plain `open` would give it (0644 under the usual umask), not the 0600
    of the temporary file it is written through: results are for sharing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _reject_non_finite(obj: Any, where: str = "$") -> None:
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError(f"non-finite number {obj!r} at {where}: JSON results must be finite")
    if isinstance(obj, dict):
        for key, value in obj.items():
            _reject_non_finite(value, f"{where}.{key}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _reject_non_finite(value, f"{where}[{i}]")


def json_bytes(obj: Any) -> bytes:
    """`obj` as indented JSON; NaN and infinities are refused."""
    _reject_non_finite(obj)
    return (json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n").encode("utf-8")


def atomic_write_json(path: Path, obj: Any) -> Path:
    """Write `obj` as indented JSON atomically; NaN and infinities are refused."""
    return atomic_write_bytes(path, json_bytes(obj))


@contextmanager
def computed_once(path: Path) -> Iterator[None]:
    """Hold an inter-process lock on `path` (the file `<path>.lock`) for the duration. A run
    that checks for a cached result and computes it inside the context is the only one doing
    so: the others wait, then find the result written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        yield
