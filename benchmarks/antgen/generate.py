"""Independent households from ANTgen, in the Shelly logger format with their ground truth.

    python benchmarks/antgen/generate.py h1_couple [h2_family ...] [--all] [--force]

For each household (`households/NAME.toml`: users, appliance models, legs, seed, days), it

1. makes sure ANTgen 0.4.1 has its own environment (`.venv-antgen` at the repository root,
   Python 3.11, pandas < 2, numpy 1.26, from PyPI; git-ignored),
2. copies ANTgen's package folder into a scratch folder with this folder's `users/` and
   `activities/` added (ANTgen ships no user models), and runs it there through `driver.py`
   (which fixes the date ANTgen reads, seeds numpy and records every appliance run),
3. converts its per-appliance traces (`convert.py`) into `cache/NAME/`:
   `readings.parquet` (Shelly logger columns), `truth.csv` (`nilm simulate --truth` format plus
   `ramp_s`), `submeter.parquet` (each appliance's own power, 1 Hz, for the energy metric) and
   `meta.json` (settings, and ANTgen's energy per appliance next to the converted one).

The cache is reused while the household file, the user and activity files and the converter are
unchanged (their hash is in `meta.json`); `--force` regenerates.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
HOUSEHOLDS = HERE / "households"
CACHE = HERE / "cache"
VENV = Path(os.environ.get("ANTGEN_VENV", REPO / ".venv-antgen"))
ANTGEN_REQUIREMENTS = [
    "antgen==0.4.1",
    "pandas>=1.5,<2",
    "numpy==1.26.4",
    "bitarray>=2",
    "lxml>=4.9",
]

sys.path.insert(0, str(HERE))
from convert import convert_household, pack_raw  # noqa: E402


def _venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_antgen_venv(python: str | None = None) -> Path:
    """ANTgen's own environment, created once; returns its package folder.

    It is made with `python` (default: `python3.11` if on PATH, else this interpreter).
    """
    python = python or shutil.which("python3.11") or sys.executable
    py = _venv_python()
    stamp = VENV / ".installed-antgen"
    if not stamp.exists() or stamp.read_text() != "\n".join(ANTGEN_REQUIREMENTS):
        if not py.exists():
            subprocess.run([python, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", *ANTGEN_REQUIREMENTS], check=True
        )
        stamp.write_text("\n".join(ANTGEN_REQUIREMENTS))
    out = subprocess.run(
        [str(py), "-c", "import importlib.util as u; print(u.find_spec('antgen').origin)"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return Path(out.stdout.strip()).parent


def household_spec(name: str) -> dict:
    """The household's TOML, with `name` checked against the file name."""
    path = HOUSEHOLDS / f"{name}.toml"
    spec = tomllib.loads(path.read_text())
    if spec.get("name") != name:
        raise ValueError(f"{path}: name {spec.get('name')!r} differs from the file name")
    return spec


def all_households() -> list[str]:
    return sorted(p.stem for p in HOUSEHOLDS.glob("*.toml"))


def _inputs_hash(name: str, stage: str) -> str:
    """What ANTgen's output (`stage` "antgen") or the converted files ("convert") depend on."""
    h = hashlib.sha256()
    files = [HOUSEHOLDS / f"{name}.toml", HERE / "driver.py"]
    files += sorted((HERE / "users").glob("*.conf")) + sorted((HERE / "activities").glob("*.conf"))
    if stage == "convert":
        files.append(HERE / "convert.py")
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    h.update("\n".join(ANTGEN_REQUIREMENTS).encode())
    return h.hexdigest()[:16]


def _antgen_config(spec: dict) -> str:
    lines = ["[GENERAL]", f"name = {spec['name']}", f"days = {int(spec['days'])}", "", "[users]"]
    lines += [f"{handle} = {conf}" for handle, conf in spec["users"].items()]
    lines += ["", "[devices]"]
    lines += [f"{kind} = {model}" for kind, model in spec["devices"].items()]
    return "\n".join(lines) + "\n"


def run_antgen(spec: dict, workdir: Path) -> Path:
    """ANTgen's output folder for the household (CSV per appliance, events, runs.json)."""
    package = ensure_antgen_venv()
    copy = workdir / "antgen"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(HERE / "users", copy / "users")
    shutil.copytree(HERE / "activities", copy / "activities" / "NILMHOME")
    config = copy / "household.conf"
    config.write_text(_antgen_config(spec))
    out = workdir / "output"
    cmd = [str(_venv_python()), str(HERE / "driver.py"), str(int(spec["seed"])), str(config),
           str(out)]  # fmt: skip
    if spec.get("alternate"):
        cmd.append("--alternate")
    env = {**os.environ, "PYTHONHASHSEED": "0", "TZ": "UTC"}
    env.pop("PYTHONPATH", None)
    log = workdir / "antgen.log"
    with log.open("w") as f:
        done = subprocess.run(cmd, cwd=copy, env=env, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"ANTgen failed for {spec['name']}:\n{log.read_text()[-3000:]}")
    return out


def generate(name: str, force: bool = False, cache: Path = CACHE) -> Path:
    """The household's converted files in `cache/NAME/` (made if missing or stale)."""
    spec = household_spec(name)
    target = cache / name
    digest = _inputs_hash(name, "convert")
    meta_path = target / "meta.json"
    if not force and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("inputs_hash") == digest:
            return target
    # ANTgen's own output is kept apart, so a change of the converter does not rerun ANTgen.
    raw = cache / f"{name}.antgen-{_inputs_hash(name, 'antgen')}.npz"
    with tempfile.TemporaryDirectory(prefix=f"antgen-{name}-") as tmp:
        if force or not raw.exists():
            for stale in cache.glob(f"{name}.antgen-*.npz"):
                stale.unlink()
            cache.mkdir(parents=True, exist_ok=True)
            pack_raw(run_antgen(spec, Path(tmp)), list(spec["devices"]), Path(tmp) / "raw.npz")
            shutil.move(str(Path(tmp) / "raw.npz"), raw)
        staging = Path(tmp) / "converted"
        meta = convert_household(spec, raw, staging)
        meta["inputs_hash"] = digest
        meta["antgen_output"] = raw.name
        (staging / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), target)
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("names", nargs="*", help="households (files in households/, without .toml)")
    p.add_argument("--all", action="store_true", help="every household")
    p.add_argument("--force", action="store_true", help="regenerate even if cached")
    p.add_argument("--cache", type=Path, default=CACHE)
    args = p.parse_args(argv)
    names = all_households() if args.all else args.names
    if not names:
        p.error("name a household or use --all")
    for name in names:
        target = generate(name, args.force, args.cache)
        meta = json.loads((target / "meta.json").read_text())
        worst = max(abs(v["relative_error"]) for v in meta["energy_check"].values())
        print(
            f"{name}: {meta['days']} days, {meta['n_readings']} readings, "
            f"{meta['n_truth_events']} truth events, {len(meta['devices'])} devices, "
            f"held_out={meta['held_out']}, energy vs ANTgen worst {worst:.2e} -> {target}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
