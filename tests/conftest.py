"""Shared fixtures: where the real recordings are, and one database written by the demo's flow.

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


# `demo_db`: `nilm demo`'s own path (`flows.app.run_demo`, no dashboard) over the simulated
# household with seed `DEMO_SEED`: `DEMO_HISTORY_DAYS` of history, after which the demo's user
# confirms `DEMO_CONFIRM_PER_DEVICE` events of each device, then `DEMO_LIVE_DAYS` live at
# `DEMO_SPEED`x while the flow learns those labels.
DEMO_SEED = 2
DEMO_HISTORY_DAYS = 0.5
DEMO_LIVE_DAYS = 3 / 24
DEMO_SPEED = 900.0
DEMO_CONFIRM_PER_DEVICE = 2


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The database the demo's flow wrote, made once per session (it takes a real-time live
    part); tests read it read-only or copy it."""
    from flows.app import run_demo
    from nilm.settings import Settings

    path = tmp_path_factory.mktemp("demo") / "demo.duckdb"
    code = run_demo(
        Settings(db_path=str(path), home_id="home", label_poll_s=0.2),
        days=DEMO_HISTORY_DAYS + DEMO_LIVE_DAYS,
        backfill_days=DEMO_HISTORY_DAYS,
        speed=DEMO_SPEED,
        seed=DEMO_SEED,
        serve=False,
        confirm_per_device=DEMO_CONFIRM_PER_DEVICE,
    )
    assert code == 0
    return path


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the real recordings are not here: {SHARED_DATA} is missing")
    return SHARED_DATA
