"""Shared fixtures: where the real recordings are, and small simulated households.

Under CI (`CI=true`, as `.ci/run` runs) every skip is a failure: CI installs everything the
tests need (the dev extra, chromium, `shared/` beside the checkout), so a test that would skip
there is hiding a broken install. Only a test marked `hardware` (it needs a real Shelly or radio)
may skip there. Outside CI a skip stays a skip, with its reason printed (`-rs`).
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    allowed = item.get_closest_marker("hardware") is not None  # CI has no Shelly or radio
    if report.skipped and under_ci() and not allowed and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (
            f"skipped under CI, where everything the tests need is installed: {reason}"
        )


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the real recordings are not here: {SHARED_DATA} is missing")
    return SHARED_DATA
