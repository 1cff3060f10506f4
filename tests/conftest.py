"""Shared fixtures. Real data lives in ../shared/data beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA_DIR = Path(os.environ.get("CELLBRIDGE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; fails (not skips) when CELLBRIDGE_REQUIRE_DATA=1 and it is absent."""
    if not DATA_DIR.is_dir():
        if os.environ.get("CELLBRIDGE_REQUIRE_DATA") == "1":
            pytest.fail(f"CELLBRIDGE_REQUIRE_DATA=1 but the shared data folder {DATA_DIR} is missing")
        pytest.skip(f"shared data folder {DATA_DIR} not found")
    return DATA_DIR


@pytest.fixture(autouse=True)
def _few_threads():
    import torch

    torch.set_num_threads(1)
    yield
