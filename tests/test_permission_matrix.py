"""The permission matrix: every route that touches a file, for every role, with the expected
status — generated as a table and every cell asserted (issue: sharing, acceptance 1).

Roles: the owner; an editor and a viewer of the shared folder; a link holder (no account, only
the link's URL); a stranger (another account); a revoked user (once shared, then unshared).

Every decision of ``driveserver/permissions.py`` has at least one row here (issue 13, item 4:
the table guards moving them there): roles on files, moves (the mount itself, a trashed item,
across the share's edge either way), trashing the mount, the names ``/Shared with me``
manages, share administration (change, revoke, leave), device ids a request names, links,
and block receipts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from driveproto.blocks import block_hash
from tests.helpers import ApiClient, RunningServer, upload

ROLES = ("owner", "editor", "viewer", "link", "stranger", "revoked")
PEOPLE = {"owner": "alice@example.com", "editor": "bob@example.com",
          "viewer": "carol@example.com", "stranger": "eve@example.com",
          "revoked": "dave@example.com"}


@dataclass
class World:
    server: RunningServer
    clients: dict[str, ApiClient]
    folder: str              # the shared folder's id
    doc: str                 # a file in it
    doc_data: bytes
    link_url: str            # a link to the folder
    per_role: dict[str, dict[str, str]]  # role -> name -> id (for destructive routes)
    editor_share: str        # the id of the editor's share of the folder
    owner_device: str        # one of the owner's devices, which nobody else may speak for
    receipt_block: dict[str, Any]  # a block the owner uploaded (with her receipt), never used
    revoked_link_url: str    # a link the owner revoked
    trashed_link_url: str    # a link to a file the owner then trashed

    def view_path(self, role: str, rest: str = "") -> str:
        base = "/Proj" if role == "owner" else "/Shared with me/Proj"
        return base + rest


async def make_world(server: RunningServer) -> World:
    clients: dict[str, ApiClient] = {}
    for role, email in PEOPLE.items():
        await server.register(email)
        clients[role] = await server.login(email)
    clients["link"] = server.anonymous()  # no account, no token
    alice = clients["owner"]
    data = b"the shared document"
    doc = await upload(alice, "/Proj/doc.txt", data)
    folder = (await alice.get("/api/files", params={"path": "/"})).body["entries"][0]["file_id"]
    per_role: dict[str, dict[str, str]] = {}
    for role in ROLES:
        per_role[role] = {
            "delete": (await upload(alice, f"/Proj/del-{role}.txt", role.encode()))["file_id"],
            "trashed": (await upload(alice, f"/Proj/tr-{role}.txt", role.encode()))["file_id"],
            "purged": (await upload(alice, f"/Proj/pu-{role}.txt", role.encode()))["file_id"],
            "moved": (await upload(alice, f"/Proj/mv-{role}.txt", role.encode()))["file_id"],
            "in_trash": (await upload(alice, f"/Proj/it-{role}.txt", role.encode()))["file_id"],
        }
        for kind in ("trashed", "purged", "in_trash"):
            assert (await alice.delete(f"/api/files/{per_role[role][kind]}")).status == 204
    shares: dict[str, str] = {}
    for role, perm in (("editor", "edit"), ("viewer", "view"), ("revoked", "edit")):
        r = await alice.post(f"/api/files/{folder}/share",
                             {"user_email": PEOPLE[role], "permission": perm})
        assert r.status == 201, r
        shares[role] = r.body["share_id"]
        if role == "revoked":
            assert (await alice.delete(f"/api/shares/{r.body['share_id']}")).status == 204
    for role in ROLES:
        mine = per_role[role]
        # Created after the shares, so they are in the shared folder's workspace.
        # The owner's outside the share: once she commits her block there, it stays hers.
        where = "" if role == "owner" else "/Proj"
        mine["receipt_target"] = (await upload(alice, f"{where}/rc-{role}.txt", b"r"))[
            "file_id"]
        # An item of the role's own drive (the link holder has none: any id answers 401).
        mine["own"] = (await upload(clients[role], f"/own-{role}.txt", role.encode()))[
            "file_id"] if role != "link" else doc["file_id"]
        side = await alice.mkdir(f"/Side-{role}")
        r = await alice.post(f"/api/files/{side['file_id']}/share",
                             {"user_email": PEOPLE["editor"], "permission": "edit"})
        assert r.status == 201, r
        mine["side_share"] = r.body["share_id"]
        r = await alice.post("/api/sync/register", {"device_name": f"dev-{role}"})
        mine["device"] = r.body["device_id"]
        r = await alice.post(f"/api/files/{doc['file_id']}/links", {})
        mine["link"] = r.body["link_id"]
    owner_device = (await alice.post("/api/sync/register", {"device_name": "keep"})).body[
        "device_id"]
    # The owner sends a block she never commits: her receipt is hers alone.
    secret = b"only the owner ever sent these bytes"
    r = await alice.post("/api/files/upload-init", {"path": "/secret.txt", "size": len(secret)})
    assert r.status == 200, r
    async with alice.session.post(r.body["upload_url"], data=secret) as resp:
        assert resp.status == 200, await resp.text()
        receipt_block = (await resp.json())["blocks"][0]
    r = await alice.post(f"/api/files/{doc['file_id']}/links", {})
    assert r.status == 201, r
    revoked = r.body
    assert (await alice.delete(f"/api/links/{revoked['link_id']}")).status == 204
    doomed = (await upload(alice, "/Proj/doomed.txt", b"soon in the trash"))["file_id"]
    r = await alice.post(f"/api/files/{doomed}/links", {})
    assert r.status == 201, r
    trashed_link_url = r.body["url"]
    assert (await alice.delete(f"/api/files/{doomed}")).status == 204
    r = await alice.post(f"/api/files/{folder}/links", {})
    assert r.status == 201, r
    return World(server, clients, folder, doc["file_id"], data, r.body["url"], per_role,
                 shares["editor"], owner_device, receipt_block, revoked["url"],
                 trashed_link_url)


Call = Callable[[World, str], Awaitable[int]]


def api(method: str, path: Callable[[World, str], str],
        body: Callable[[World, str], Any] | None = None,
        params: Callable[[World, str], Any] | None = None) -> Call:
    async def call(w: World, role: str) -> int:
        r = await w.clients[role].call(method, path(w, role),
                                       json=body(w, role) if body else None,
                                       params=params(w, role) if params else None)
        return r.status
    return call


async def fetch_block(w: World, role: str) -> int:
    """Read a block the way a device does: a download grant, then the block URL."""
    r = await w.clients[role].get(f"/api/files/{w.doc}/download")
    if r.status != 200:
        return r.status
    async with w.clients[role].session.get(r.body["blocks"][0]["url"]) as resp:
        return resp.status


async def link_get(w: World, role: str, suffix: str = "", **params: str) -> int:
    async with w.clients[role].session.get(w.link_url + suffix, params=params) as resp:
        return resp.status


async def revoked_link_get(w: World, role: str) -> int:
    async with w.clients[role].session.get(w.revoked_link_url) as resp:
        return resp.status


async def trashed_link_get(w: World, role: str) -> int:
    async with w.clients[role].session.get(w.trashed_link_url) as resp:
        return resp.status


async def changes_as_owner_device(w: World, role: str) -> int:
    """Read the change feed claiming to be one of the owner's devices."""
    r = await w.clients[role].get("/api/sync/cursor")
    if r.status != 200:
        return r.status
    r = await w.clients[role].get("/api/sync/changes", params={
        "cursor": r.body["cursor"], "device_id": w.owner_device, "timeout": "0"})
    return r.status


H = block_hash(b"the shared document")
S, A, F, N, U = 200, 201, 403, 404, 401  # shorthand for the table
E, B, C = 204, 400, 409

#        route                                   owner editor viewer link stranger revoked
TABLE: list[tuple[str, Call, tuple[int | None, ...]]] = [
    ("GET metadata", api("GET", lambda w, r: f"/api/files/{w.doc}"), (S, S, S, U, N, N)),
    ("GET list folder", api("GET", lambda w, r: "/api/files",
                            params=lambda w, r: {"path": w.view_path(r)}), (S, S, S, U, N, N)),
    ("GET download", api("GET", lambda w, r: f"/api/files/{w.doc}/download"),
     (S, S, S, U, N, N)),
    ("GET block via grant", fetch_block, (S, S, S, U, N, N)),
    ("GET content", api("GET", lambda w, r: f"/api/files/{w.doc}/content"), (S, S, S, U, N, N)),
    ("GET versions", api("GET", lambda w, r: f"/api/files/{w.doc}/versions"),
     (S, S, S, U, N, N)),
    ("POST upload-init (new version)", api(
        "POST", lambda w, r: "/api/files/upload-init",
        body=lambda w, r: {"file_id": w.doc, "size": 5}), (S, S, F, U, N, N)),
    ("POST upload-init (new file by path)", api(
        "POST", lambda w, r: "/api/files/upload-init",
        body=lambda w, r: {"path": w.view_path(r, f"/new-{r}.txt"), "size": 5}),
     (S, S, F, U, N, N)),
    ("POST complete", api(
        "POST", lambda w, r: f"/api/files/{w.doc}/complete",
        body=lambda w, r: {"blocks": [H]}), (S, S, F, U, N, N)),
    ("POST restore version", api("POST", lambda w, r: f"/api/files/{w.doc}/restore/1"),
     (S, S, F, U, N, N)),
    ("POST create folder", api(
        "POST", lambda w, r: "/api/folders",
        body=lambda w, r: {"path": w.view_path(r, f"/dir-{r}")}), (A, A, F, U, N, N)),
    ("PATCH rename in place", api(
        "PATCH", lambda w, r: f"/api/files/{w.doc}",
        body=lambda w, r: {"path": w.view_path(r, "/doc.txt")}), (S, S, F, U, N, N)),
    ("DELETE to trash", api("DELETE", lambda w, r: f"/api/files/{w.per_role[r]['delete']}"),
     (E, E, F, U, N, N)),
    ("DELETE the shared folder itself", api("DELETE", lambda w, r: f"/api/files/{w.folder}"),
     (None, F, F, U, N, N)),
    ("POST restore from trash", api(
        "POST", lambda w, r: f"/api/trash/{w.per_role[r]['trashed']}/restore"),
     (S, F, F, U, N, N)),
    ("DELETE purge from trash", api(
        "DELETE", lambda w, r: f"/api/trash/{w.per_role[r]['purged']}"), (E, F, F, U, N, N)),
    ("PATCH move out of the share", api(
        "PATCH", lambda w, r: f"/api/files/{w.per_role[r]['moved']}",
        body=lambda w, r: {"path": f"/taken-by-{r}.txt"}), (S, F, F, U, N, N)),
    ("POST share", api(
        "POST", lambda w, r: f"/api/files/{w.folder}/share",
        body=lambda w, r: {"user_email": "frank@example.com", "permission": "view"}),
     (A, F, F, U, N, N)),
    ("GET shares", api("GET", lambda w, r: f"/api/files/{w.folder}/shares"),
     (S, F, F, U, N, N)),
    ("POST link", api("POST", lambda w, r: f"/api/files/{w.doc}/links", body=lambda w, r: {}),
     (A, F, F, U, N, N)),
    ("GET link (metadata)", lambda w, r: link_get(w, r), (S, S, S, S, S, S)),
    ("GET link content", lambda w, r: link_get(w, r, "/content", path="/doc.txt"),
     (S, S, S, S, S, S)),
    # --- rows per decision moved into permissions.py (issue 13, item 4) ---
    # authorize_move: the mount keeps its place (the owner's is a rename in place, a no-op).
    ("PATCH move the shared folder itself", api(
        "PATCH", lambda w, r: f"/api/files/{w.folder}",
        body=lambda w, r: {"path": "/Proj" if r == "owner" else f"/Moved-{r}"}),
     (S, B, F, U, N, N)),
    # authorize_move: nothing in the trash moves.
    ("PATCH move a trashed file", api(
        "PATCH", lambda w, r: f"/api/files/{w.per_role[r]['in_trash']}",
        body=lambda w, r: {"path": w.view_path(r, f"/back-{r}.txt")}), (N, N, F, U, N, N)),
    # authorize_workspace_change: into the share, as out of it above.
    ("PATCH move own file into the share", api(
        "PATCH", lambda w, r: f"/api/files/{w.per_role[r]['own']}",
        body=lambda w, r: {"path": w.view_path(r, f"/in-{r}.txt")}), (S, F, F, U, N, N)),
    # writable_base: the names sharing manages, and mounts one does not have.
    ("POST create folder as a mount", api(
        "POST", lambda w, r: "/api/folders",
        body=lambda w, r: {"path": "/Shared with me/Proj"}), (C, C, C, U, C, C)),
    ("PATCH move onto /Shared with me", api(
        "PATCH", lambda w, r: f"/api/files/{w.doc}",
        body=lambda w, r: {"path": "/Shared with me/doc.txt"}), (C, C, F, U, N, N)),
    ("POST create folder in a missing mount", api(
        "POST", lambda w, r: "/api/folders",
        body=lambda w, r: {"path": "/Shared with me/Nope/dir"}), (N, N, N, U, N, N)),
    # authorize_share / authorize_end_share: the owner changes and revokes, the recipient
    # leaves, and a share id is nobody else's to learn about (404, even to a fellow recipient).
    ("PATCH share permission", api(
        "PATCH", lambda w, r: f"/api/shares/{w.editor_share}",
        body=lambda w, r: {"permission": "edit"}), (S, N, N, U, N, N)),
    ("PATCH share permission (bad value first)", api(
        "PATCH", lambda w, r: f"/api/shares/{w.editor_share}",
        body=lambda w, r: {"permission": "admin"}), (B, B, B, U, B, B)),
    ("DELETE share (revoke or leave)", api(
        "DELETE", lambda w, r: f"/api/shares/{w.per_role[r]['side_share']}"),
     (E, E, N, U, N, N)),
    # own_device: a request speaks only for the user's own devices.
    ("DELETE a device", api("DELETE", lambda w, r: f"/api/devices/{w.per_role[r]['device']}"),
     (E, N, N, U, N, N)),
    ("POST register with a device_id", api(
        "POST", lambda w, r: "/api/sync/register",
        body=lambda w, r: {"device_id": w.owner_device, "device_name": "keep"}),
     (S, N, N, U, N, N)),
    ("GET changes as a device", changes_as_owner_device, (S, N, N, U, N, N)),
    ("POST complete credited to a device", api(
        "POST", lambda w, r: f"/api/files/{w.doc}/complete",
        body=lambda w, r: {"blocks": [H], "device_id": w.owner_device}), (S, B, F, U, N, N)),
    # Grants.receipt_for: a receipt is good only for the user it was minted for.
    ("POST complete with the owner's receipt", api(
        "POST", lambda w, r: f"/api/files/{w.per_role[r]['receipt_target']}/complete",
        body=lambda w, r: {"blocks": [w.receipt_block]}), (S, B, F, U, N, N)),
    # authorize_link_admin / link_root.
    ("DELETE link", api("DELETE", lambda w, r: f"/api/links/{w.per_role[r]['link']}"),
     (E, N, N, U, N, N)),
    ("GET a revoked link", revoked_link_get, (N, N, N, N, N, N)),
    ("GET a link to a trashed file", trashed_link_get, (N, N, N, N, N, N)),
]


async def test_permission_matrix(server: RunningServer) -> None:
    await server.register("frank@example.com")
    w = await make_world(server)
    # None: not tried (the owner deleting the shared folder would end the other rows' world).
    expected = {(name, role): want for name, _, wants in TABLE
                for role, want in zip(ROLES, wants, strict=True) if want is not None}
    actual = {}
    for name, call, _ in TABLE:
        for role in ROLES:
            if (name, role) in expected:
                actual[(name, role)] = await call(w, role)
    wrong = {k: (expected[k], actual[k]) for k in expected if expected[k] != actual[k]}
    table = "\n".join(f"{name:38} " + " ".join(
        f"{actual.get((name, r), '-'):>4}{'!' if (name, r) in wrong else ' '}" for r in ROLES)
        for name, _, _ in TABLE)
    assert not wrong, f"(expected, actual) per cell: {wrong}\n{' ' * 39}{ROLES}\n{table}"
    # Nothing a refused role tried left a trace: Alice's document is as she wrote it... except
    # for the new versions the owner and the editor were allowed to make (same content).
    r = await w.clients["owner"].get(f"/api/files/{w.doc}/content")
    assert r.body == w.doc_data
