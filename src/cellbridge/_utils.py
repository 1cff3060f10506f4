"""Small helpers used across the package: seeded row samples, atomic writes, gzip-or-plain files."""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np


def subsample_rows(n: int, max_rows: int | None, seed: int) -> np.ndarray | None:
    """Sorted seeded sample of ``max_rows`` of ``n`` row indices, or None when all rows fit.

    The one seeded subsample of the package: the same ``(n, max_rows, seed)`` always gives the same
    rows (``numpy.random.default_rng(seed).choice`` without replacement, sorted).
    """
    if max_rows is None or n <= max_rows:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))


def sample_or_all(n: int, max_rows: int | None, seed: int) -> np.ndarray:
    """:func:`subsample_rows` as an index array (``arange(n)`` when all rows fit)."""
    rows = subsample_rows(n, max_rows, seed)
    return np.arange(n) if rows is None else rows


def atomic_write(path: str | os.PathLike, write: Callable[[str], object], *, overwrite: bool = False,
                 suffix: str = ".tmp") -> Path:
    """Write ``path`` through ``write(tmp_path)`` into a hidden temporary file beside it, then rename.

    An interrupted write never leaves a half-written ``path``; the temporary file is removed on
    any error. An existing ``path`` is refused unless ``overwrite``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def is_gzip(path: str | os.PathLike) -> bool:
    """True when the file starts with the gzip magic bytes (gzip and bgzip alike)."""
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def open_maybe_gzip(path: str | os.PathLike, mode: str = "rt"):
    """Open a plain or gzip-compressed file (``"rt"``: UTF-8 text, ``"rb"``: bytes)."""
    raw = gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8") if mode == "rt" else raw


def to_json(obj) -> str:
    """Strict JSON (``NaN``/``inf`` become ``null``; numpy scalars and arrays become numbers and lists)."""
    def clean(x):
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, np.ndarray):
            return clean(x.tolist())
        if isinstance(x, np.generic):
            x = x.item()
        if isinstance(x, float) and not math.isfinite(x):
            return None
        return x

    return json.dumps(clean(obj), indent=1, allow_nan=False)
