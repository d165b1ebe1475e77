"""The import rules of ARCHITECTURE.md, checked on the source and on a real interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_CORE = {"bytewax", "duckdb", "panel", "holoviews", "bokeh", "bleak", "aiohttp"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_imports_no_io_or_engine_library() -> None:
    offenders = {
        str(p.relative_to(REPO)): sorted(_imports(p) & FORBIDDEN_IN_CORE)
        for p in (REPO / "nilm").rglob("*.py")
        if _imports(p) & FORBIDDEN_IN_CORE
    }
    assert offenders == {}


def test_core_imports_none_of_the_other_packages() -> None:
    offenders = {
        str(p.relative_to(REPO)): sorted(_imports(p) & {"flows", "dashboards", "pi_agent"})
        for p in (REPO / "nilm").rglob("*.py")
        if _imports(p) & {"flows", "dashboards", "pi_agent"}
    }
    assert offenders == {}


def test_importing_the_core_loads_nothing_heavy() -> None:
    code = (
        "import sys, nilm, nilm.records, nilm.parsing, nilm.validation, nilm.simulator\n"
        "heavy = {'bytewax', 'duckdb', 'panel', 'holoviews', 'river', 'numba', 'torch'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_scan_would_catch_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import duckdb\nfrom bytewax import operators\n")
    assert _imports(bad) & FORBIDDEN_IN_CORE == {"duckdb", "bytewax"}
