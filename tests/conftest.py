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


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh download cache for one test, and no waiting between retries."""
    from tspnet import sources

    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(sources, "RETRY_BACKOFF_S", 0.0)
    return tmp_path / "cache"
