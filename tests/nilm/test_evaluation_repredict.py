"""`nilm eval` re-predicts the history once at the end: the same figures, far fewer answers."""

from __future__ import annotations

import pytest

from nilm.detection import HomeEventDetector
from nilm.evaluation import Evaluation
from nilm.learning import HomeLearner
from nilm.simulator import HouseholdSimulator, SimulatorConfig


def test_repredicting_at_the_end_gives_the_figures_of_repredicting_after_each_label(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batch, truth = HouseholdSimulator(SimulatorConfig(seed=5)).run(1.0)
    det = HomeEventDetector(batch.home_id)
    events = det.update(batch) + det.flush()
    answers = {"n": 0}
    answer = HomeLearner._answer

    def counted(self: HomeLearner, *args: object, **kwargs: object) -> object:
        answers["n"] += 1
        return answer(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(HomeLearner, "_answer", counted)
    runs = {}
    for at_end in (False, True):
        answers["n"] = 0
        ev = Evaluation(truth, label_budget=5, repredict_at_end=at_end)
        for event in events:
            ev.feed_event(event)
        runs[at_end] = (ev.result(), dict(ev.activations), answers["n"])
        assert not ev.learners[batch.home_id].stale  # nothing left to re-predict
    (r0, a0, n0), (r1, a1, n1) = runs[False], runs[True]
    assert r1 == r0
    assert a1 == a0 and any(a["device"] for a in a1.values())
    # after each label the whole memory was answered again; now once
    assert n1 < n0 / 2
    assert n1 >= len(events)
