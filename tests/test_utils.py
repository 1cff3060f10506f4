"""Package helpers (cellbridge._utils): seeded row samples, atomic writes, gzip-or-plain files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from cellbridge._utils import atomic_write, is_gzip, open_maybe_gzip, sample_or_all, subsample_rows


def test_subsample_rows_none_when_all_fit_and_seeded_sorted_sample_otherwise():
    assert subsample_rows(10, None, 0) is None and subsample_rows(10, 10, 0) is None
    rows = subsample_rows(100, 7, seed=3)
    assert rows.shape == (7,) and np.all(np.diff(rows) > 0) and rows.max() < 100
    assert np.array_equal(rows, subsample_rows(100, 7, seed=3))
    assert np.array_equal(rows, np.sort(np.random.default_rng(3).choice(100, 7, replace=False)))
    assert np.array_equal(sample_or_all(5, 10, 0), np.arange(5))
    assert np.array_equal(sample_or_all(100, 7, 3), rows)


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "broken.h5ad"

    def boom(tmp):
        Path(tmp).write_text("partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, boom, overwrite=False)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_refuses_to_overwrite_unless_asked(tmp_path):
    path = tmp_path / "sub" / "x.txt"
    assert atomic_write(path, lambda tmp: Path(tmp).write_text("one")) == path
    with pytest.raises(FileExistsError, match="overwrite"):
        atomic_write(path, lambda tmp: Path(tmp).write_text("two"))
    assert path.read_text() == "one"
    atomic_write(path, lambda tmp: Path(tmp).write_text("two"), overwrite=True)
    assert path.read_text() == "two" and [p.name for p in path.parent.iterdir()] == ["x.txt"]


def test_gzip_and_plain_files_read_alike(tmp_path):
    plain, packed = tmp_path / "a.tsv", tmp_path / "a.tsv.gz"
    plain.write_text("chr1\t1\t2\n")
    with gzip.open(packed, "wt") as fh:
        fh.write("chr1\t1\t2\n")
    assert not is_gzip(plain) and is_gzip(packed)
    for path in (plain, packed):
        with open_maybe_gzip(path) as fh:
            assert fh.read() == "chr1\t1\t2\n"
        with open_maybe_gzip(path, "rb") as fh:
            assert fh.read() == b"chr1\t1\t2\n"
