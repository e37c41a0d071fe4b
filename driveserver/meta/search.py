"""Search by name across everything a user sees: their drive, the folders they shared, and the
folders shared with them (``GET /api/search``).

**The index.** Migration 10 keeps ``file_names``, an SQLite FTS5 index with the trigram
tokenizer over every item's ``name_key`` (NFC, case-folded: the key names are unique by), kept
current by triggers on ``files``. The needle is folded the same way, so "RePort" finds
"quarterly report.PDF", and a phrase of trigrams is a substring test answered from the index:
the query starts from the index entries that match and never scans ``files``
(``tests/test_search.py`` asks SQLite's planner).

**One key range per owner.** An item's index key is the number of its owner (the owner of its
workspace: no move changes it) in the high bits and a sequence number (creation order) in the
low 40. A search reads, for each owner whose items the asker sees (themselves, and whoever
shares a folder with them), only that owner's range of the index, newest first, keeps the
items of the asker's view (their workspaces) and stops when a page is full: what it costs
depends on the asker's own items and on those of the people who share with them, never on
anyone else's (with one range for everybody, a user with 1,000 files searching beside
someone with 100,000 of similar names waited as long as a scan of them). Pages merge the
owners' answers by sequence number, so results come newest first across the whole view, and
a cursor is the last sequence number sent. (A range per workspace would spare a recipient
the sharer's other items, but sharing a folder moves its items to a new workspace, and
re-keying them all made sharing a folder of 100,000 items hold the writer for 5.2 s instead of
1.1 s; the owner check that replaces it costs 0.78 s against 0.70 s.)

A needle shorter than three characters has no trigram. Those queries walk the same key ranges
instead (``file_search_keys`` holds the name key beside the key, so this reads no
``files`` row but for a match), newest first, stopping when a page is full.

**Who sees what.** The index holds everyone's names. A query names the workspaces the asker's
view is made of (:func:`view_of`, from :func:`meta.mounts.mounts_for`) and the route then asks
:func:`driveserver.permissions.role_for` about every row it would return; a row it refuses is
never shown (there should be none). A folder shared with the asker is matched by the name it
has in their view, ``/Shared with me/<mount name>``, not by its owner's name for it.

**PostgreSQL** keeps the same key tables and triggers (so results, their order and cursors are
the same) and indexes ``file_search_keys.name_key`` with ``pg_trgm`` (``USING gin (name_key
gin_trgm_ops)``, :data:`driveserver.meta.dialect.PG_SEARCH`): every needle takes the walk
with ``LIKE '%needle%'``, which the planner may answer from the trigram index (three
characters or more) or from the owner's key range. (It could need none of the side tables:
a GIN index on ``files (workspace_id, name_key gin_trgm_ops)`` with ``btree_gin`` would
answer ``workspace_id = ANY(...) AND name_key LIKE ...`` within the asker's workspaces; that
is for when search on PostgreSQL is measured.)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from driveproto.names import MAX_DEPTH, name_key

from ..paths import join_path
from .db import Row
from .mounts import Mount, mounts_for

# Trigrams: a needle needs at least this many characters (after folding) to use the index.
MIN_INDEXED = 3
# Sub-selects (or ids) per statement; views with more get several statements.
CHUNK = 50
SEQ_BITS = 40
SEQ_MASK = (1 << SEQ_BITS) - 1
# Larger than any sequence number: the first page.
FIRST = SEQ_MASK + 1

_LIVE = " AND f.trashed_at IS NULL AND (f.is_directory = 1 OR f.version > 0)"

# One owner's key range of the index, newest first: an index probe, then a primary key
# lookup into ``file_search_keys`` and ``files`` per candidate. (``CROSS JOIN`` keeps this
# order of the tables in SQLite whatever its statistics say; other databases read it as a
# plain join.)
_INDEXED_PART = (
    "SELECT * FROM (SELECT f.*, k.n AS search_n FROM file_names"
    " CROSS JOIN file_search_keys k CROSS JOIN files f"
    " WHERE file_names MATCH ? AND file_names.rowid BETWEEN ? AND ?"
    " AND k.n = file_names.rowid AND f.id = k.file_id" + _LIVE +
    " AND f.workspace_id IN ({marks}) ORDER BY file_names.rowid DESC LIMIT ?)")

# The same range walked without the index (needles under three characters; every needle on
# PostgreSQL, whose FROM needs the subquery named), in key order, so that it stops once a page
# is full rather than sorting every match.
_SHORT_PART = (
    "SELECT * FROM (SELECT f.*, k.n AS search_n FROM file_search_keys k CROSS JOIN files f"
    " WHERE k.n BETWEEN ? AND ? AND k.name_key LIKE ? ESCAPE '\\' AND f.id = k.file_id"
    + _LIVE + " AND f.workspace_id IN ({marks}) ORDER BY k.n DESC LIMIT ?) AS part")

_BY_ID_SQL = (
    "SELECT f.*, k.n AS search_n FROM file_search_keys k JOIN files f ON f.id = k.file_id"
    " WHERE k.file_id IN ({marks})" + _LIVE)

_OWNERS_SQL = (
    "SELECT w.id, o.no FROM workspaces w JOIN search_owners o ON o.user_id = w.owner_id"
    " WHERE w.id IN ({marks})")

# Every result's names up to its owner's root, in one walk up for the whole page.
_ANCESTORS_SQL = (
    "WITH RECURSIVE up(start, id, parent_id, name, depth) AS ("
    "  SELECT id, id, parent_id, name, 0 FROM files WHERE id IN ({marks})"
    "  UNION ALL SELECT up.start, f.id, f.parent_id, f.name, up.depth + 1"
    "  FROM files f JOIN up ON f.id = up.parent_id WHERE up.depth <= ?)"
    " SELECT start, id, name, depth FROM up ORDER BY start, depth")


def seq_of(row: Row) -> int:
    """A result's sequence number: its place in the order of results, and the page cursor."""
    return int(row["search_n"]) & SEQ_MASK


def fold(text: str) -> str:
    """The needle as names are indexed: NFC, case-folded (:func:`driveproto.names.name_key`)."""
    return name_key(text)


def fts_phrase(needle: str) -> str:
    """An FTS5 query matching ``needle`` as one phrase of trigrams, i.e. as a substring; the
    only character a quoted phrase must escape is the quote itself."""
    return '"' + needle.replace('"', '""') + '"'


def like_pattern(needle: str) -> str:
    """``%needle%`` for ``LIKE ... ESCAPE '\\'``, with LIKE's own characters taken literally."""
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass(frozen=True)
class View:
    """What a search looks through for one user: the workspaces their view is made of, by the
    number of their owner; where each mount's folder appears (root id -> view path prefix);
    and the folders shared with them under the names they see them by."""

    owners: dict[int, tuple[str, ...]]
    prefixes: dict[str, str]
    shared_names: dict[str, str]  # root id -> mount name, for folders shared with the user


def _chunks(items: tuple[Any, ...]) -> Iterable[tuple[Any, ...]]:
    for i in range(0, len(items), CHUNK):
        yield items[i: i + CHUNK]


async def view_of(q: Any, user_id: str) -> View:
    mounts: dict[str, Mount] = await mounts_for(q, user_id)
    owners: dict[int, list[str]] = {}
    for chunk in _chunks(tuple(sorted(mounts))):
        marks = ",".join("?" * len(chunk))
        for r in await q.fetchall(_OWNERS_SQL.format(marks=marks), chunk):
            owners.setdefault(int(r["no"]), []).append(r["id"])
    return View(
        owners={no: tuple(ids) for no, ids in sorted(owners.items())},
        prefixes={m.root_id: m.prefix for m in mounts.values()},
        shared_names={m.root_id: m.mount_name for m in mounts.values()
                      if m.share_id is not None and m.mount_name is not None})


async def matching(q: Any, view: View, needle: str, before: int, limit: int) -> list[Row]:
    """Live items of ``view`` whose name (or, for a folder shared with the user, mount name)
    contains the folded ``needle``, with sequence numbers below ``before``, newest first, at
    most ``limit``. Each row is a ``files`` row plus ``search_n``, its index key."""
    # PostgreSQL has no FTS5 table: its trigram index (pg_trgm) is on file_search_keys'
    # name keys and answers the LIKE of the walk itself (meta.dialect.PG_SEARCH).
    indexed = len(needle) >= MIN_INDEXED and q.dialect == "sqlite"
    part, arg = (_INDEXED_PART, fts_phrase(needle)) if indexed else \
        (_SHORT_PART, like_pattern(needle))
    top = min(before - 1, SEQ_MASK)
    # One sub-select per owner and per CHUNK of their workspaces, CHUNK sub-selects a statement.
    parts = [(no, ids) for no, workspaces in view.owners.items()
             for ids in _chunks(workspaces)]
    rows: list[Row] = []
    for chunk in _chunks(tuple(parts)):
        sql: list[str] = []
        params: list[Any] = []
        for no, ids in chunk:
            lo, hi = no << SEQ_BITS, (no << SEQ_BITS) | top
            sql.append(part.format(marks=",".join("?" * len(ids))))
            params += [arg, lo, hi, *ids, limit] if indexed else [lo, hi, arg, *ids, limit]
        rows += await q.fetchall(" UNION ALL ".join(sql), params)
    # A shared folder's own row belongs to its owner's workspace: it is found by the name the
    # user sees it by, and only that one.
    mounted = tuple(root for root, mount_name in view.shared_names.items()
                    if needle in fold(mount_name))
    for ids in _chunks(mounted):
        marks = ",".join("?" * len(ids))
        rows += [r for r in await q.fetchall(_BY_ID_SQL.format(marks=marks), ids)
                 if seq_of(r) < before]
    rows.sort(key=seq_of, reverse=True)
    return rows[:limit]


async def view_paths(q: Any, view: View, file_ids: list[str]) -> dict[str, str]:
    """Each item's path in the user's view: the prefix of the nearest folder above it (or
    itself) where a mount of the view hangs, then the names below that folder. An item with no
    such folder above it is not in the view and gets no path."""
    if not file_ids:
        return {}
    chains: dict[str, list[Row]] = {}
    for chunk in _chunks(tuple(file_ids)):
        marks = ",".join("?" * len(chunk))
        for r in await q.fetchall(_ANCESTORS_SQL.format(marks=marks), (*chunk, MAX_DEPTH)):
            chains.setdefault(r["start"], []).append(r)
    paths: dict[str, str] = {}
    for start, chain in chains.items():
        for i, node in enumerate(chain):
            if node["id"] in view.prefixes:
                below = [n["name"] for n in reversed(chain[:i])]
                prefix = view.prefixes[node["id"]]
                paths[start] = prefix + join_path(below) if below else (prefix or "/")
                break
    return paths
