"""The documentation site builds with warnings as errors, its tutorials run and show their figures.

The build is the one a user runs (``python -m sphinx -W --keep-going -n -b html docs OUT``):
nitpicky, so a docstring reference to a ``cellbridge`` object that does not exist fails it, and
every tutorial in ``docs/tutorials/`` is executed. The docs tools come with the ``test`` extra;
when they are missing this test fails (it does not skip).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
TOOLS = ("sphinx", "numpydoc", "myst_nb", "sphinxarg", "furo", "jupytext")


def test_docs_tools_are_installed():
    missing = [name for name in TOOLS if importlib.util.find_spec(name) is None]
    assert not missing, f"docs tools missing: {missing}; install them with `pip install -e \".[test]\"`"


def test_docs_build_strict_and_tutorials_show_figures(tmp_path, shared_data):
    out = tmp_path / "html"
    env = {**os.environ, "CELLBRIDGE_DOCS_OFFLINE": "1", "CELLBRIDGE_DATA": str(shared_data)}
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-j", "2", "-b", "html",
           "-d", str(tmp_path / "doctrees"), str(DOCS), str(out)]
    run = subprocess.run(cmd, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    log = "\n".join(line for line in (run.stdout + run.stderr).splitlines() if "IPKernelApp" not in line)
    assert run.returncode == 0, f"docs build failed:\n{log[-6000:]}"

    tutorials = sorted(p.stem for p in (DOCS / "tutorials").glob("*.py"))
    assert len(tutorials) >= 6
    for name in tutorials:
        page = (out / "tutorials" / f"{name}.html").read_text()
        figures = re.findall(r'<img[^>]+src="\.\./_images/[^"]+\.png"', page)
        assert figures, f"tutorial {name} shows no figure"
        assert "Traceback" not in page, f"tutorial {name} printed a traceback"
    # the API reference documents each namespace, the CLI page every subcommand
    api = (out / "api" / "pp.html").read_text()
    assert 'id="cellbridge.pp.gene_activity"' in api
    assert 'id="cellbridge.BiCLUM"' in (out / "api" / "models.html").read_text()
    cli = (out / "cli.html").read_text()
    for command in ("integrate", "cluster", "gene-activity", "evaluate", "simulate"):
        assert f"cellbridge {command}" in cli, command
