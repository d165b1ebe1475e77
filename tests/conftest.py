"""Shared fixtures: where the real recordings are, and small simulated households."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the real recordings are not here: {SHARED_DATA} is missing")
    return SHARED_DATA
