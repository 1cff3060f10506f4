"""Fixtures of the reliability suite: the CLI run in a scratch folder, checked for tracebacks and debris."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cellbridge.cli import main


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def listing():
    """Every path below a folder, relative and sorted (to compare a folder before and after)."""
    return _listing


@pytest.fixture
def run(tmp_path, capsys, files):
    """Run the CLI in ``tmp_path``; returns (exit code, stderr) after checking that no traceback was
    printed and that neither ``tmp_path`` nor the module's ``files`` folder changed."""
    def _run(*args) -> tuple[int, str]:
        before, inputs_before = _listing(tmp_path), _listing(files)
        cwd = os.getcwd()
        os.chdir(tmp_path)
        try:
            rc = main([str(a) for a in args])
        finally:
            os.chdir(cwd)
        _, err = capsys.readouterr()
        assert "Traceback" not in err, err
        assert _listing(tmp_path) == before, "files left behind"
        assert _listing(files) == inputs_before, "an input folder changed"
        return rc, err

    return _run
