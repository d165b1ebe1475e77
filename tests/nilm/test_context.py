"""What is running: a step while a device runs is more likely that device's, as far as the labels
of the home bear it out."""

from __future__ import annotations

import math
import pickle
from dataclasses import replace
from datetime import timedelta

from nilm.classification import KernelClassifier
from nilm.learning import HomeLearner
from tests.nilm.test_learning import T0, label, make_event


def _washer_and_oven(boosted: bool) -> KernelClassifier:
    """Two devices of the same power; the washer's steps come while the washer runs."""
    clf = KernelClassifier()
    for i in range(12):
        p = 3.3 + 0.02 * (i % 5)
        context = frozenset({"washer"}) if boosted else frozenset()
        clf.learn_one({"on": 1.0, "p": p}, "washer", context)
        clf.learn_one({"on": 1.0, "p": p + 0.01}, "oven")
    return clf


def test_a_running_device_is_favoured_when_the_labels_bear_it_out() -> None:
    clf = _washer_and_oven(boosted=True)
    x = {"on": 1.0, "p": 3.35}
    alone, running = clf.predict_proba_one(x), clf.predict_proba_one(x, frozenset({"washer"}))
    assert clf.context_boost(x) > 1.0
    assert running["washer"] > 0.7 > alone["washer"]
    # a device running in an off event's context is a separate question, not answered here
    assert clf.context_boost({"on": 0.0, "p": 3.35}) == 1.0


def test_context_the_labels_never_saw_changes_nothing() -> None:
    clf = _washer_and_oven(boosted=False)
    x = {"on": 1.0, "p": 3.35}
    assert clf.context_boost(x) == 1.0
    assert clf.predict_proba_one(x, frozenset({"washer"})) == clf.predict_proba_one(x)


def test_the_learner_remembers_what_ran_on_the_legs_and_labels_learn_it() -> None:
    learner = HomeLearner("h", seed=0, context_window_s=3 * 3600.0)
    heater_on = make_event("heater", 0.0)
    learner.on_event(heater_on)
    label(learner, 1, heater_on, "heater")
    # Hand-made steps without the legs' levels: levels that leave the heater no room would
    # rightly close its run (the pairer's floor), and what runs is what this test is about.
    no_levels = {"p_before_w": math.nan, "p_after_w": math.nan}
    fridge_on = replace(make_event("fridge", 1.0), **no_levels)  # leg a, under the heater's run
    microwave_on = replace(make_event("microwave", 2.0), **no_levels)  # leg b
    learner.on_event(fridge_on)
    learner.on_event(microwave_on)
    assert learner.recent[fridge_on.event_id].context == frozenset({"heater"})
    assert learner.recent[microwave_on.event_id].context == frozenset({"heater"})
    late = replace(make_event("fridge", 0.0), event_id="late", ts=T0 + timedelta(hours=4))
    learner.on_event(late)
    assert learner.recent["late"].context == frozenset()  # the run is older than the window
    label(learner, 2, fridge_on, "fridge")
    assert frozenset({"heater"}) in learner.calibration.contexts
    restored = pickle.loads(pickle.dumps(learner))
    assert restored.calibration.contexts == learner.calibration.contexts


def test_without_a_window_there_is_no_context() -> None:
    learner = HomeLearner("h", seed=0)
    heater_on = make_event("heater", 0.0)
    learner.on_event(heater_on)
    label(learner, 1, heater_on, "heater")
    fridge_on = make_event("fridge", 1.0)
    learner.on_event(fridge_on)
    assert learner.recent[fridge_on.event_id].context == frozenset()
