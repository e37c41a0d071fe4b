"""The layering of ../shared/DESIGN.md, held by the code's own imports (issue 13, item 5).

Read from the source with ``ast`` (module-level imports, the ones that run at import time;
``if TYPE_CHECKING:`` blocks excluded), so a new import that breaks a layer or closes a cycle
fails here, naming the modules, before it becomes a tangle.
"""

from __future__ import annotations

import ast
import re
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("driveproto", "driveserver", "syncclient")


def _module_files() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports at module level."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if not isinstance(node, (ast.Import, ast.ImportFrom, ast.If, ast.Try)):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import):
                found.update(alias.name for alias in sub.names)
            elif isinstance(sub, ast.ImportFrom):
                base = package[: len(package) - sub.level + 1] if sub.level else []
                module = ".".join([*base, *([sub.module] if sub.module else [])])
                found.add(module)
                found.update(f"{module}.{alias.name}" for alias in sub.names)
    return {m for m in found if m in known and m != name}


GRAPH = {name: _imports(name, path, set(_module_files()))
         for name, path in _module_files().items()}


def _importers_of(prefix: str, within: str) -> dict[str, set[str]]:
    """Modules under ``within`` that import a module under ``prefix``."""
    def under(module: str, top: str) -> bool:
        return module == top or module.startswith(top + ".")
    return {name: {d for d in deps if under(d, prefix)}
            for name, deps in GRAPH.items()
            if under(name, within) and any(under(d, prefix) for d in deps)}


def test_the_graph_is_read() -> None:
    """The reader finds the imports it is meant to (else every rule below passes vacuously)."""
    assert "driveproto.blocks" in GRAPH["syncclient.transfer"] or any(
        d.startswith("driveproto") for d in GRAPH["syncclient.transfer"])
    assert "driveserver.meta.backend" in GRAPH["driveserver.app"]
    assert "driveserver.errors" in GRAPH["driveserver.paths"]


def test_no_import_cycle() -> None:
    try:
        list(TopologicalSorter(GRAPH).static_order())
    except CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


@pytest.mark.parametrize("within, forbidden, why", [
    ("driveproto", "driveserver", "the protocol package stands alone (zstandard only)"),
    ("driveproto", "syncclient", "the protocol package stands alone (zstandard only)"),
    ("syncclient", "driveserver", "a laptop installs only the client"),
    ("driveserver.errors", "driveserver", "errors.py is a leaf of exception classes"),
    ("driveserver.meta", "driveserver.api", "units of work know nothing of HTTP"),
    ("driveserver.meta", "driveserver.sync", "the journal and notifications are written in meta/"),
    ("driveserver.meta", "driveserver.blocks", "the database never talks to the block store"),
    ("driveserver.storage", "driveserver.meta", "block stores know nothing of metadata"),
    ("driveserver.storage", "driveserver.api", "block stores know nothing of HTTP routes"),
    ("driveserver.blocks", "driveserver.api", "block routes are stateless: grants only"),
    # Block routes trust grants; since issue 12 they also ask the database whether a grant's
    # session or share still stands and what an upload grant has left, but never read or
    # write the tree, versions or shares.
    ("driveserver.blocks", "driveserver.meta.tree", "block routes never touch the tree"),
    ("driveserver.blocks", "driveserver.meta.versions", "block routes never commit versions"),
    ("driveserver.blocks", "driveserver.meta.shares", "block routes never change shares"),
])
def test_layer(within: str, forbidden: str, why: str) -> None:
    assert _importers_of(forbidden, within) == {}, why


def test_only_the_entry_point_imports_the_client_cli() -> None:
    """The commands and the daemon stand on ``syncclient.status``, not on ``cli`` (which once
    imported the daemon that imported it back)."""
    assert set(_importers_of("syncclient.cli", "syncclient")) <= {"syncclient.__main__"}


_SQL = re.compile(r"^\s*(SELECT\s.+\sFROM\s|INSERT\s+INTO\s|UPDATE\s+\w+\s+SET\s|DELETE\s+FROM\s"
                  r"|WITH\s+RECURSIVE\s|BEGIN\b|SAVEPOINT\s|PRAGMA\s)", re.S)  # written in capitals here


# Not the metadata database: the local block store's pack of small objects, a SQLite file of
# its own that nothing but the store reads (driveserver/storage/packed.py).
_OWN_DATABASES = {"driveserver.storage.packed"}


def test_sql_lives_in_meta_only() -> None:
    """Route handlers, permissions, the feed and the CLI call named functions of ``meta/``;
    no statement is written anywhere else in the server (issue 13, item 3)."""
    found = []
    for name, path in _module_files().items():
        if not name.startswith("driveserver.") or name.startswith("driveserver.meta") \
                or name in _OWN_DATABASES:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and _SQL.match(node.value):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value[:40]!r}")
    assert found == []


def test_the_sql_check_sees_statements() -> None:
    assert _SQL.match("SELECT * FROM files WHERE id = ?")
    assert _SQL.match("WITH RECURSIVE down(id) AS (SELECT 1)")
    assert not _SQL.match("Delete from both tiers.")


def test_outside_meta_a_transaction_is_a_unit_of_work() -> None:
    """Outside ``meta/`` a write runs as ``await db.write(fn)``, never as an open
    ``async with db.transaction()`` block that anything could await inside (issue 13)."""
    found = [f"{path.relative_to(ROOT)}:{node.lineno}"
             for name, path in _module_files().items()
             if name.startswith("driveserver.") and not name.startswith("driveserver.meta")
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and node.func.attr == "transaction"]
    assert found == []
