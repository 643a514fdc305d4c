"""Shared fixtures: the real reference data beside the checkout, when it is there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DVC_NO_ANALYTICS", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data`, or skip: a user's clone has no ../shared."""
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip("../shared/data is absent (reference data only exists beside the dev checkout)")
    return path
