"""The `nilm` command: simulate, replay, demo, run, dashboard, label and eval.

Each subcommand loads one `Settings` and hands it to the module that does the work; this file only
parses arguments, sets up logging and turns expected errors into one clear line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from nilm.settings import Settings, load_settings

__all__ = ["main"]

log = logging.getLogger("nilm")


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    return load_settings(getattr(args, "config", None), **overrides)


def cmd_simulate(args: argparse.Namespace) -> int:
    from flows.recordings import write_simulation
    from nilm.simulator import SimulatorConfig

    config = SimulatorConfig(
        seed=args.seed,
        home_id=args.home,
        novel_device=args.novel_device,
        novel_from_day=args.novel_from_day,
        degrade_device=args.degrade_device,
        degrade_from_day=args.degrade_from_day,
    )
    n, t = write_simulation(config, args.days, Path(args.out), args.truth and Path(args.truth))
    print(
        f"wrote {n:,} readings to {args.out}"
        + (f" and {t:,} truth events to {args.truth}" if args.truth else "")
    )
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from flows.app import replay

    settings = _settings(args, db_path=args.db, home_id=args.home)
    summary = replay([Path(p) for p in args.files], settings, progress=not args.quiet)
    print(summary.text())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from flows.app import run_demo

    mqtt = {"url": args.mqtt} if args.mqtt else None
    settings = _settings(
        args, db_path=args.db, dashboard_port=args.port, dashboard_host=args.host, mqtt=mqtt
    )
    return run_demo(
        settings,
        days=args.days,
        backfill_days=args.backfill_days,
        speed=args.speed,
        seed=args.seed,
        serve=not args.no_dashboard,
        confirm_per_device=args.confirm_per_device,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from flows.app import run_cluster, run_live

    settings = _settings(args, db_path=args.db, shards=args.shards)
    if args.processes > 1:
        return run_cluster(settings, args.config, args.processes)
    addresses = [a for a in (args.addresses or "").split(";") if a.strip()]
    if addresses and not 0 <= args.process_id < len(addresses):
        raise ValueError(
            f"--process-id {args.process_id} must index --addresses ({len(addresses)} given)"
        )
    return run_live(settings, args.process_id, addresses or None)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from dashboards.serve import run_dashboard_command

    settings = _settings(args, dashboard_port=args.port, dashboard_host=args.host)
    paths = _db_paths(args.db, args.shards)
    return int(
        run_dashboard_command(
            paths, settings.dashboard_host, settings.dashboard_port, settings=settings
        )
    )


def _db_paths(dbs: Sequence[str], shards: int | None) -> list[str]:
    """The files named, or with `--shards K` the K shard files of the one named (as `nilm run
    --shards K --db DB` writes them)."""
    if not shards or shards <= 1:
        return list(dbs)
    if len(dbs) != 1:
        raise ValueError(
            f"--shards {shards} expands one --db into its shard files; {len(dbs)} given"
        )
    return list(Settings(db_path=dbs[0], shards=shards).shard_paths())


def cmd_label(args: argparse.Namespace) -> int:
    from dashboards.store import DataStore, UnknownEvent
    from flows.database import open_database

    paths = _db_paths(args.db, args.shards)
    for path in paths:  # a fleet's event is in the one shard that stores its home
        con = open_database(path)
        try:
            store = DataStore(con)
            held = con.execute("SELECT 1 FROM events WHERE event_id = ?", [args.event_id])
            if held.fetchone() is None and len(paths) > 1:
                continue
            label_id = store.confirm_label(args.event_id, args.device)
        finally:
            con.close()
        where = f" in {path}" if len(paths) > 1 else ""
        print(f"label {label_id}: event {args.event_id} is {args.device!r}{where}")
        return 0
    raise UnknownEvent(f"event {args.event_id!r} is in none of {', '.join(paths)}")


def cmd_eval(args: argparse.Namespace) -> int:
    from flows.eval import run_eval
    from nilm.parsing import parse_timestamp

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    holdout = [d.strip() for d in args.holdout.split(",") if d.strip()] if args.holdout else None
    degraded = {}
    for item in args.degraded or []:
        device, sep, since = item.partition("@")
        if not sep:
            raise ValueError(f"--degraded {item!r}: write DEVICE@TIME, e.g. fridge@2026-01-12")
        degraded[device] = parse_timestamp(since)
    result = run_eval(
        [Path(p) for p in args.readings],
        Path(args.truth),
        args.label_budget,
        models,
        holdout=holdout,
        degraded=degraded or None,
        settings=_settings(args),
        on_table=lambda table: print(table, file=sys.stderr),
        submeter_path=Path(args.submeter) if args.submeter else None,
        energy_bin_s=args.energy_bin_s,
        label_holdout_after=args.label_holdout_after,
    )
    print(json.dumps(result, indent=2, default=float))
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from flows.database import DatabaseLocked
    from flows.retrain import run_retrain

    settings = _settings(args)
    try:
        db = args.db
        if args.shards and args.shards > 1:
            if not args.home:
                raise ValueError(f"--shards {args.shards}: name the home to retrain with --home")
            db = Settings(db_path=args.db, shards=args.shards).db_path_for(args.home)
        run_retrain(db, args.model, args.out, args.home, settings.utc_offset_s)
    except DatabaseLocked as err:
        print(
            f"nilm retrain: {err}. Retraining reads the whole database: stop the flow, or "
            "retrain from a copy of the file made while it was stopped",
            file=sys.stderr,
        )
        return 2
    except ImportError as err:
        print(
            f"nilm retrain: the batch models need the batch extra ({err}); install it with: "
            "pip install '.[batch]'",
            file=sys.stderr,
        )
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nilm", description="Local, online device recognition for a Shelly Pro 3EM."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("simulate", help="write a simulated household and its ground truth")
    p.add_argument("--days", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="readings file (.parquet or .csv)")
    p.add_argument("--truth", help="ground-truth events CSV")
    p.add_argument("--home", default="home")
    p.add_argument("--novel-device", help="a device that joins from --novel-from-day")
    p.add_argument("--novel-from-day", type=int)
    p.add_argument("--degrade-device", help="a device that degrades from --degrade-from-day")
    p.add_argument("--degrade-from-day", type=int)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("replay", help="run recorded readings through the dataflow")
    p.add_argument("files", nargs="+", help="Shelly logger Parquet/CSV or REDD mains CSV")
    p.add_argument("--db", required=True)
    p.add_argument("--home", default=None, help="home id (default: 'home')")
    p.add_argument("--config", help="settings TOML")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("demo", help="simulator → flow → DuckDB → dashboard")
    p.add_argument("--port", type=int, default=None, help="dashboard port (default 5006)")
    p.add_argument("--host", default=None, help="dashboard address (default 127.0.0.1)")
    p.add_argument("--db", default="demo.duckdb")
    p.add_argument("--config", help="settings TOML")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--speed", type=float, default=60.0, help="simulated seconds per second")
    p.add_argument(
        "--backfill-days",
        type=float,
        default=2.0,
        help="days of history simulated before going live",
    )
    p.add_argument("--days", type=float, default=None, help="stop after this many days")
    p.add_argument("--no-dashboard", action="store_true")
    p.add_argument(
        "--mqtt",
        default=None,
        metavar="mqtt://HOST:PORT",
        help="publish to Home Assistant through this MQTT broker (discovery and states)",
    )
    p.add_argument(
        "--confirm-per-device",
        type=int,
        default=3,
        help="events of each device a simulated user confirms after the history",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("run", help="the long-lived flow on the Pi agents' readings")
    p.add_argument("--config", required=True, help="settings TOML")
    p.add_argument("--db", default=None)
    p.add_argument(
        "--shards", type=int, default=None, help="store the homes in this many DuckDB files"
    )
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="run the flow as a cluster of this many processes on this machine",
    )
    p.add_argument(
        "--process-id",
        type=int,
        default=0,
        help="this process's index in --addresses (a cluster across machines)",
    )
    p.add_argument(
        "--addresses",
        default=None,
        help='every process\'s HOST:PORT, ";"-separated, the same on each (process 0 owns '
        "the database and serves the dashboard)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("dashboard", help="browse a database that no flow holds")
    p.add_argument(
        "--db",
        required=True,
        nargs="+",
        help="the file, or a fleet's files (one page, a home picker)",
    )
    p.add_argument(
        "--shards", type=int, default=None, help="--db is a fleet stored in this many files"
    )
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--host", default=None)
    p.add_argument("--config", help="settings TOML")
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("label", help="confirm or correct one event's device")
    p.add_argument("event_id")
    p.add_argument("device")
    p.add_argument("--db", required=True, nargs="+", help="the file, or a fleet's files")
    p.add_argument(
        "--shards", type=int, default=None, help="--db is a fleet stored in this many files"
    )
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("eval", help="accuracy figures on readings with ground truth")
    p.add_argument("readings", nargs="+")
    p.add_argument("--truth", required=True)
    p.add_argument("--label-budget", type=int, default=10)
    p.add_argument(
        "--submeter",
        help="each device's own power (Parquet/CSV: timestamp_utc, one column of W per device): "
        'adds "energy" (share of energy correctly assigned, per-device energy error)',
    )
    p.add_argument("--energy-bin-s", type=int, default=60, help="time bins of the energy figures")
    p.add_argument("--models", default=None, help="comma-separated: river,xgboost,cnn,lstm")
    p.add_argument(
        "--holdout",
        default=None,
        help="devices not labelled yet, comma-separated (default: those first seen "
        "after a third of the span)",
    )
    p.add_argument(
        "--label-holdout-after",
        type=int,
        default=None,
        metavar="N",
        help="the user labels a held-out device once N of its events were seen (default: "
        "never); novelty is then scored on its events before that first label",
    )
    p.add_argument(
        "--degraded",
        action="append",
        metavar="DEVICE@TIME",
        help="a device that starts degrading at TIME, for the drift delay",
    )
    p.add_argument("--config", help="settings TOML")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "retrain",
        help="train a batch model on the confirmed labels, for the flow to serve",
        description="Train a batch model on a home's confirmed labels in DB and write it "
        "atomically to OUT, where a flow with batch_model_path = OUT picks it up. DuckDB "
        "lets one process open the file: while a flow ('nilm run', 'nilm demo') holds DB, "
        "stop it first or retrain from a copy of the file.",
    )
    p.add_argument("--db", required=True, help="the DuckDB file (no flow may hold it)")
    p.add_argument(
        "--model",
        default="xgboost",
        help="xgboost[:smote|:class_weight] (cnn and lstm[:focal] need the event's window, so "
        "only xgboost answers in the flow)",
    )
    p.add_argument("--out", required=True, help="model file to write (batch_model_path)")
    p.add_argument("--home", default=None, help="home id (default: the only one in DB)")
    p.add_argument(
        "--shards", type=int, default=None, help="DB is a fleet in this many files (needs --home)"
    )
    p.add_argument("--config", help="settings TOML (for utc_offset_s)")
    p.set_defaults(func=cmd_retrain)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except (FileNotFoundError, ValueError, PermissionError) as err:
        print(f"nilm {args.command}: {err}", file=sys.stderr)
        return 2
    except ImportError as err:
        print(
            f"nilm {args.command}: this command needs a part that is not installed ({err}); "
            "install the PC side with: pip install '.[pc]'",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
