"""A snapshot the code can no longer read (an older version's) starts that step afresh, once
said clearly, instead of stopping the flow at every restart."""

from __future__ import annotations

import logging
import pickle

import pytest

from flows import dataflow
from flows.dataflow import ObjectStep
from nilm.learning import HomeLearner

# What an older version's learner snapshot looks like to this one: a class that is gone.
GONE_CLASS = b"cnilm.learning\nHomeLearnerOfOld\n."


def _step(resume: bytes | None) -> ObjectStep[HomeLearner, str, int]:
    return ObjectStep(
        resume, lambda home: HomeLearner(home), lambda s, v: len(s.recent), None, "learn",
        "/var/lib/nilm/recovery",
    )  # fmt: skip


def test_an_unreadable_learner_snapshot_starts_afresh_and_says_so_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dataflow, "_REPORTED_UNREADABLE", set())
    with pytest.raises(AttributeError):
        pickle.loads(GONE_CLASS)  # what stopped the flow before
    with caplog.at_level(logging.DEBUG, logger="flows.dataflow"):
        steps = [_step(GONE_CLASS) for _ in range(3)]  # three homes, one process
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "learn" in text and "/var/lib/nilm/recovery" in text and "afresh" in text
    assert "HomeLearnerOfOld" in text  # what could not be read
    # each starts with no state and builds a learner on its first item
    for step in steps:
        assert step.state is None
        (out,), _ = step.on_item("h")
        assert out == 0 and isinstance(step.state, HomeLearner)
    # and its next snapshot is readable again
    assert isinstance(pickle.loads(steps[0].snapshot()), HomeLearner)


def test_a_readable_snapshot_resumes_silently(caplog: pytest.LogCaptureFixture) -> None:
    learner = HomeLearner("h")
    with caplog.at_level(logging.WARNING, logger="flows.dataflow"):
        step = _step(pickle.dumps(learner))
    assert isinstance(step.state, HomeLearner) and step.state.home_id == "h"
    assert not caplog.records
