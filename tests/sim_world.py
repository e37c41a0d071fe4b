"""The whole-system simulation's world: one real server, two users, their devices and API clients.

Alice has two synced devices, Bob one; each user also has an API client (a browser, a script)
that changes the drive behind the devices' backs. :class:`World` holds them, runs a device's
sync (normally, or crashing it at a chosen remote call and restarting it from its state, as
after a kill), and keeps the ledger the checks read: every content a user saved (in a folder
when its device synced, or uploaded by an API client), and every non-zero exit and 5xx answer.

The random choices are in :mod:`tests.sim_ops`; the run and the checks of
one seed in :mod:`tests.sim_run`. Nothing here is random: a seed's operations and
crash points are drawn by the caller, so a seed replays exactly (devices transfer one file at a
time, ``parallel_transfers = 1``, so that "the k-th remote call" names the same call each run).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from typing import Any

from syncclient.remote import Remote
from tests.helpers import ApiClient, RunningServer
from tests.sync_helpers import Device, folder_tree

SHARED = "Shared with me"
# Every Remote method that goes over the network: a crash point is the k-th call to any of them.
REMOTE_CALLS = ("call", "content", "content_batch", "put_block", "put_batch", "get_block")


class Crash(BaseException):
    """The engine dies here (a BaseException, so no ``except Exception`` in the client catches
    it: nothing after this point runs, as under ``kill -9``)."""


@dataclass
class SimDevice:
    user: str
    device: Device
    offline_until: int = -1  # the step until which this device does not sync

    @property
    def name(self) -> str:
        return self.device.name


@dataclass
class SimUser:
    email: str
    api: ApiClient
    devices: list[SimDevice] = field(default_factory=list)


@dataclass
class World:
    server: RunningServer
    users: dict[str, SimUser]
    log: list[str]
    saved: set[bytes] = field(default_factory=set)  # every content a user saved
    problems: list[str] = field(default_factory=list)  # non-zero exits, 5xx answers
    crashes: int = 0

    @property
    def devices(self) -> list[SimDevice]:
        return [d for u in self.users.values() for d in u.devices]

    def note(self, line: str) -> None:
        self.log.append(line)

    def problem(self, line: str) -> None:
        self.problems.append(line)
        self.note("PROBLEM " + line)

    async def sync(self, d: SimDevice, crash_at: int | None = None,
                   crash_after: bool = True) -> None:
        """One ``drive-sync run --once`` of ``d``. With ``crash_at = k`` its engine dies at its
        k-th remote call (after the server answered when ``crash_after``, else before the
        request left), and it is started again at once from what its state database kept.

        What the folder holds when the sync starts enters the ledger, except what the sync
        leaves in a folder no longer shared with the user: the client keeps such unsent
        changes on the disk by design and sends them nowhere, so they are the user's alone
        (overwriting one later loses nothing the system took)."""
        new = {v for v in folder_tree(d.device.folder).values() if v is not None} - self.saved
        self.saved |= new
        if crash_at is None:
            self.note(f"sync {d.name}")
            await self._run_once(d)
        else:
            with crashing(crash_at, crash_after) as fired:
                self.note(f"sync {d.name}, crash at remote call {crash_at} "
                          f"{'after' if crash_after else 'before'} its answer")
                await self._run_once(d, may_crash=True)
            if fired:
                self.crashes += 1
                self.note(f"  crashed in {fired[0]}; restart {d.name}")
                await self._run_once(d)
            else:
                self.note("  no crash: the sync made fewer calls")
        untaken = new & await self.left_in_ended_shares(d)
        if untaken:
            self.saved -= untaken
            self.note(f"  {len(untaken)} content(s) kept in a share that ended, not sent")

    async def left_in_ended_shares(self, d: SimDevice) -> set[bytes]:
        """Contents of the files ``d`` has under ``Shared with me/<name>`` where ``<name>`` is
        no longer a folder shared with its user."""
        mounts = {p for p in await server_tree(self.users[d.user].api)
                  if p.startswith(SHARED + "/") and p.count("/") == 1}
        return {v for p, v in folder_tree(d.device.folder).items()
                if v is not None and p.startswith(SHARED + "/")
                and "/".join(p.split("/")[:2]) not in mounts}

    async def _run_once(self, d: SimDevice, may_crash: bool = False) -> None:
        out, err = io.StringIO(), io.StringIO()
        try:
            with redirect_stdout(out), redirect_stderr(err):
                rc = await d.device.cli("run", "--once")
        except Crash:
            if not may_crash:
                raise
            return
        if rc != 0:
            self.problem(f"{d.name}: run --once exited {rc}: {err.getvalue().strip()}")

    def answer(self, who: str, what: str, status: int, body: Any) -> None:
        """Log an API client's answer; any 5xx is a problem (a 4xx is the server refusing a
        stale or impossible request, which the simulation expects)."""
        code = body.get("error", {}).get("code") if isinstance(body, dict) else None
        self.note(f"{who}: {what} -> {status}{' ' + code if code else ''}")
        if status >= 500:
            self.problem(f"{who}: {what} answered {status}: {body!r}")


@contextmanager
def crashing(at: int, after: bool) -> Iterator[list[str]]:
    """Make the ``at``-th Remote network call (counting from 1) raise :class:`Crash`; the
    yielded list gets the name of the call that crashed, if it came. The hooks are on the class
    (the CLI builds its own Remote in a worker thread), and only one device syncs at a time."""
    seen = [0]
    fired: list[str] = []
    saved = {name: getattr(Remote, name) for name in REMOTE_CALLS}

    def hook(name: str) -> Any:
        real = saved[name]

        async def hooked(self: Remote, *args: Any, **kw: Any) -> Any:
            seen[0] += 1
            if seen[0] == at and not fired:
                fired.append(name)
                if not after:
                    raise Crash(name)
                await real(self, *args, **kw)
                raise Crash(name)
            return await real(self, *args, **kw)
        return hooked

    for name in REMOTE_CALLS:
        setattr(Remote, name, hook(name))
    try:
        yield fired
    finally:
        for name, real in saved.items():
            setattr(Remote, name, real)


def tune(device: Device) -> None:
    """Settings for a simulated device: random deletions are intended (no delete guard), and
    one transfer at a time (so a crash point names the same call on every replay)."""
    path = device.config_dir / "config.json"
    conf = json.loads(path.read_text())
    conf["delete_guard_min_files"] = 1_000_000
    conf["parallel_transfers"] = 1
    path.write_text(json.dumps(conf))


async def server_tree(api: ApiClient) -> dict[str, tuple[bool, str, int]]:
    """The user's live tree as the server has it: path (relative, as in a folder) ->
    (is_directory, file_id, version), read page by page from ``GET /api/sync/snapshot``."""
    out: dict[str, tuple[bool, str, int]] = {}
    cursor: str | None = None
    while True:
        params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
        r = await api.get("/api/sync/snapshot", params=params)
        assert r.status == 200, r
        for e in r.body["entries"]:
            out[e["path"].lstrip("/")] = (bool(e["is_directory"]), e["file_id"],
                                          int(e.get("version") or 0))
        if not r.body["has_more"]:
            return out
        cursor = r.body["next_cursor"]


async def server_contents(api: ApiClient) -> dict[str, bytes | None]:
    """The user's tree with every file's current bytes (None for a folder), in the shape of
    :func:`tests.sync_helpers.folder_tree`."""
    tree = await server_tree(api)
    out: dict[str, bytes | None] = {}
    for path, (is_dir, file_id, _) in tree.items():
        if is_dir:
            out[path] = None
            continue
        out[path] = await fetch_bytes(api, file_id)
    return out


async def fetch_bytes(api: ApiClient, file_id: str) -> bytes:
    async with api.session.get(f"{api.base_url}/api/files/{file_id}/content",
                               headers=api.headers) as resp:
        assert resp.status == 200, resp.status
        return await resp.read()
