"""Runs ANTgen 0.4.1 unchanged, inside its own old environment, reproducibly.

Run by `generate.py` with the ANTgen venv's Python, from a copy of ANTgen's package folder (it
reads `users/`, `appliances/` and `activities/` relative to the working directory and imports its
modules by bare name). Usage:

    python driver.py SEED CONFIG OUT_DIR [--alternate]

What it changes around ANTgen, and why (ANTgen's own code is not edited):

- `datetime.datetime.today()` returns 2020-01-14: ANTgen stamps its CSVs from "today" and builds
  the first day as `int("YYYYMMDD") + 1`, which is no date on the last day of a month (today,
  2026-11-30, gives 20261131 and pandas raises). A fixed day also makes the output independent of
  when it runs. The converter re-stamps the trace anyway.
- numpy's global generator is seeded from SEED: ANTgen seeds only Python's `random`, but its
  NOISE components draw from `np.random`.
- `os.listdir` is sorted: ANTgen picks appliance models with `random.choice(os.listdir(...))`,
  whose order depends on the file system.
- Every `ApplianceModel.synthesize` call is recorded (appliance, offset, duration, and where each
  AMBAL component lies and of what type), to `OUT_DIR/runs.json`: the converter takes the
  appliance's state changes (its truth events) from these component boundaries.
"""

import datetime as _dt
import json
import os
import random
import runpy
import sys

import numpy as np

FIXED_TODAY = _dt.datetime(2020, 1, 14)


class _FixedDatetime(_dt.datetime):
    @classmethod
    def today(cls):
        return cls(FIXED_TODAY.year, FIXED_TODAY.month, FIXED_TODAY.day)

    @classmethod
    def now(cls, tz=None):
        return cls(FIXED_TODAY.year, FIXED_TODAY.month, FIXED_TODAY.day, tzinfo=tz)


def main():
    seed, config, out_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    alternate = "--alternate" in sys.argv[4:]
    random.seed(seed)
    np.random.seed(seed % 2**32)

    real_listdir = os.listdir
    os.listdir = lambda path=".": sorted(real_listdir(path))
    import pandas  # noqa: F401 - before the date is faked: its C types subclass the real one

    _dt.datetime = _FixedDatetime

    sys.path.insert(0, os.getcwd())
    import ApplianceModel as am_module  # ANTgen's own module, from the copy

    runs = []
    original = am_module.ApplianceModel.synthesize

    def recording_synthesize(self, offset, duration):
        power = original(self, offset, duration)
        start = 0
        comps = []
        for c in self.comps:  # the same walk as ApplianceModel.synthesize
            end = start + round(c.dur * duration)
            if end - start <= 0 or end - start > 86400:  # ANTgen skips these, not moving on
                continue
            comps.append({"type": c.type, "start": offset + start, "end": offset + end})
            start = end
        runs.append(
            {"appliance": self.appliance_type, "offset": offset, "duration": duration,
             "components": comps}
        )
        return power

    am_module.ApplianceModel.synthesize = recording_synthesize

    argv = ["antgen.py", "-o", out_dir, "-w", "-s", str(seed), config]
    if alternate:
        argv.insert(1, "-a")
    sys.argv = argv
    runpy.run_path(os.path.join(os.getcwd(), "antgen.py"), run_name="__main__")

    with open(os.path.join(out_dir, "runs.json"), "w") as f:
        json.dump({"seed": seed, "fixed_today": FIXED_TODAY.isoformat(), "runs": runs}, f)


if __name__ == "__main__":
    main()
