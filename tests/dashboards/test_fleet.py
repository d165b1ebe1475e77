"""The dashboard over a fleet stored in two files: a home picker, every page on the picked home,
and labels stored in the file (shard) that holds the labelled event's home.

The files are written by the real fleet flow (`fleet_flow` with `FleetReplaySource`, homes
routed to their shard by `ShardedDuckDBSink`), not by hand.
"""

from __future__ import annotations

import shutil
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import panel as pn
import pytest
from bokeh.document import Document

from dashboards.app import PAGES, build_app
from dashboards.serve import DashboardHandle, run_dashboard_command
from dashboards.store import DataStore, FleetStore
from flows.cli import _db_paths
from flows.recordings import write_simulation
from nilm.settings import Settings, shard_of
from nilm.simulator import SimulatorConfig
from tests.flows.test_fleet import replay_into_shards

HOMES = ("h-a", "h-b", "h-c", "h-d")  # shard_of puts them in both of 2 shards
FIXED_NOW = datetime(2026, 1, 7, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def fleet_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ...]:
    """Two shard files written by the fleet flow from four simulated homes (4 h each)."""
    tmp = tmp_path_factory.mktemp("fleet")
    files = {}
    for i, home in enumerate(HOMES):
        path = tmp / f"{home}.parquet"
        write_simulation(
            SimulatorConfig(seed=60 + i, home_id=home), 4 / 24, path, None, progress=False
        )
        files[home] = [path]
    settings = Settings(db_path=str(tmp / "fleet.duckdb"), shards=2)
    assert {shard_of(h, 2) for h in HOMES} == {0, 1}
    replay_into_shards(settings, files)
    return tuple(Path(p) for p in settings.shard_paths())


@pytest.fixture
def fleet(fleet_files: tuple[Path, ...], tmp_path: Path) -> Iterator[FleetStore]:
    """A writable fleet store over private copies of the shard files."""
    copies = []
    for path in fleet_files:
        copy = tmp_path / path.name
        shutil.copyfile(path, copy)
        copies.append(duckdb.connect(str(copy)))
    store = FleetStore(copies, clock=lambda: FIXED_NOW)
    yield store
    store.close()
    for con in copies:
        con.close()


def _homes_of(fleet: FleetStore, event_ids: list[str]) -> set[str]:
    """The homes of these events, looked up in every shard."""
    homes = set()
    for con in fleet.connections:
        cur = con.cursor()
        rows = cur.execute(
            "SELECT DISTINCT home_id FROM events WHERE list_contains(?, event_id)", [event_ids]
        ).fetchall()
        cur.close()
        homes |= {str(r[0]) for r in rows}
    return homes


def test_the_store_lists_every_home_of_every_shard_and_reads_each_from_its_own(
    fleet: FleetStore,
) -> None:
    assert fleet.homes() == sorted(HOMES)
    assert fleet.default_home == "h-a"
    for home in HOMES:
        store = fleet.store(home)
        assert store.home_id == home
        assert store.connection is fleet.connections[shard_of(home, 2)]
        events = store.events(*store.data_bounds())  # type: ignore[misc]
        assert len(events) > 0 and set(events["home_id"]) == {home}
    assert FleetStore(fleet.connections, preferred="h-c").default_home == "h-c"
    assert FleetStore(fleet.connections, preferred="nowhere").default_home == "h-a"


def test_every_page_shows_the_picked_home(fleet: FleetStore) -> None:
    app = build_app(fleet, home="h-b")._nilm_app
    assert app.home_picker.visible and list(app.home_picker.options) == sorted(HOMES)
    assert app.home_picker.value == "h-b" and app.store.home_id == "h-b"
    for page in range(len(PAGES)):  # build every page on the first home
        app.tabs.active = page
    for home in ("h-c", "h-a"):  # on another shard, then back on the first
        app.home_picker.value = home  # what picking it in the browser does
        assert app.store is fleet.store(home)
        for page in range(len(PAGES)):
            app.tabs.active = page
            app.refresh()
        views = (app.live, app.events, app.queue, app.devices, app.unknowns, app.health)
        for view in views:
            assert view.store is app.store, type(view).__name__
            view.__panel__().get_root(Document())
        shown = app.tabs.objects[0].select(pn.widgets.Widget)  # the Live tab's widgets
        assert any(w is app.live.live for w in shown)  # are the new live view's
        for table in (app.events.table, app.queue.table):
            shown_ids = list(table.value["event_id"])
            assert shown_ids and _homes_of(fleet, shown_ids) == {home}


def test_a_label_goes_to_the_shard_of_its_home(fleet: FleetStore) -> None:
    for home in HOMES:
        app = build_app(fleet, home=home)._nilm_app
        app.tabs.active = PAGES.index("Label")
        row = app.queue.selected()
        assert row is not None and _homes_of(fleet, [row["event_id"]]) == {home}
        app.queue.whole_cluster.value = False
        assert len(app.queue.label_selected(f"kettle of {home}")) == 1
    for k, con in enumerate(fleet.connections):
        stored = con.execute("SELECT home_id, device FROM labels ORDER BY home_id").fetchall()
        assert stored == [(h, f"kettle of {h}") for h in sorted(HOMES) if shard_of(h, 2) == k]


def test_one_home_shows_no_picker(fleet_files: tuple[Path, ...]) -> None:
    con = duckdb.connect(str(fleet_files[0]), read_only=True)
    try:
        one = build_app(DataStore(con, home_id="h-a"))._nilm_app
        assert not one.home_picker.visible and one.store.home_id == "h-a"
        shard = FleetStore([con])
        homes = shard.homes()
        assert len(homes) >= 1 and all(shard_of(h, 2) == 0 for h in homes)
    finally:
        con.close()


def test_nilm_dashboard_serves_the_shards_of_a_fleet_read_only(
    fleet_files: tuple[Path, ...],
) -> None:
    paths = _db_paths([str(fleet_files[0]).replace("-0.duckdb", ".duckdb")], 2)
    assert paths == [str(p) for p in fleet_files]
    seen: dict[str, object] = {}

    def visit(handle: DashboardHandle) -> None:
        assert handle.fleet is not None
        seen["homes"] = handle.fleet.homes()
        seen["read_only"] = handle.fleet.read_only
        with urllib.request.urlopen(handle.url, timeout=60) as response:  # a served session
            page = response.read().decode()
        seen["title"] = f"Home energy · {len(HOMES)} homes" in page

    assert run_dashboard_command(paths, port=0, settings=Settings(), wait=visit) == 0
    assert seen == {"homes": sorted(HOMES), "read_only": True, "title": True}
    with pytest.raises(ValueError, match="one --db"):
        _db_paths(paths, 2)


def test_nilm_label_finds_the_shard_of_the_event(
    fleet_files: tuple[Path, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main

    for path in fleet_files:
        shutil.copyfile(path, tmp_path / path.name)
    base = str(tmp_path / "fleet.duckdb")
    paths = _db_paths([base], 2)
    home = next(h for h in HOMES if shard_of(h, 2) == 1)
    with duckdb.connect(paths[1], read_only=True) as con:
        row = con.execute("SELECT min(event_id) FROM events WHERE home_id = ?", [home]).fetchone()
    assert row is not None and row[0] is not None
    assert main(["label", row[0], "kettle", "--db", base, "--shards", "2"]) == 0
    assert paths[1] in capsys.readouterr().out
    for k, path in enumerate(paths):
        with duckdb.connect(path, read_only=True) as con:
            labels = con.execute("SELECT event_id, device, home_id FROM labels").fetchall()
        assert labels == ([(row[0], "kettle", home)] if k == 1 else [])
    assert main(["label", "no-such-event", "kettle", "--db", *paths]) == 2
    assert "none of" in capsys.readouterr().err
