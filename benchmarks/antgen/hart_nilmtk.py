"""NILMTK's Hart (1985) steady-state edge detector on each leg: the benchmark's baseline.

Runs in its own environment (`.venv-nilmtk`, made by `benchmarks/bench_accuracy.py` from PyPI
`nilmtk-s14pe`, the maintained NILMTK fork for Python 3.11, which needs pandas < 3):

    python hart_nilmtk.py IN.npz OUT.csv [--state-threshold W] [--noise-level W]

IN.npz holds `ts_us` and, per leg `a`/`b`, `{leg}_p` (active W) and `{leg}_q` (reactive var).
OUT.csv gets one row per edge: `ts_us,leg,delta_p_w`, stamped where the new steady state begins.
The thresholds default to NILMTK's own (`Hart85.train`: 15 W state threshold, 70 W noise level).
"""

import argparse
import contextlib
import io

import numpy as np
import pandas as pd
from nilmtk.feature_detectors.steady_states import find_steady_states


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--state-threshold", type=float, default=15.0)
    ap.add_argument("--noise-level", type=float, default=70.0)
    args = ap.parse_args()
    data = np.load(args.src)
    index = pd.to_datetime(data["ts_us"], unit="us", utc=True)
    rows = []
    for leg in "ab":
        frame = pd.DataFrame(
            {"active": data[f"{leg}_p"], "reactive": data[f"{leg}_q"]}, index=index
        )
        with contextlib.redirect_stdout(io.StringIO()):  # it prints its progress
            _, transitions = find_steady_states(
                frame, state_threshold=args.state_threshold, noise_level=args.noise_level
            )
        if transitions.empty:
            continue
        t_us = (transitions.index - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)
        for t, dp in zip(t_us, transitions["active transition"].to_numpy(), strict=True):
            rows.append((int(t), leg, float(dp)))
    with open(args.out, "w") as f:
        f.write("ts_us,leg,delta_p_w\n")
        for t, leg, dp in sorted(rows):
            f.write(f"{t},{leg},{dp:.1f}\n")


if __name__ == "__main__":
    main()
