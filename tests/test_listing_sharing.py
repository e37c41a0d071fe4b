"""A folder listing says, to the owner, what each item is shared with (issue 14: the web app
shows it beside each name); nobody else learns of the owner's links or other recipients."""

from __future__ import annotations

from typing import Any

from tests.helpers import ApiClient, upload


async def entries(client: ApiClient, path: str) -> dict[str, dict[str, Any]]:
    r = await client.get("/api/files", params={"path": path})
    assert r.status == 200, r
    return {e["name"]: e for e in r.body["entries"]}


async def test_the_owner_sees_people_and_live_links_per_item(alice: ApiClient,
                                                             bob: ApiClient) -> None:
    team = await alice.mkdir("/Team")
    inside = await upload(alice, "/Team/plan.txt", b"plan")
    report = await upload(alice, "/report.pdf", b"%PDF")
    await upload(alice, "/plain.txt", b"plain")
    r = await alice.post(f"/api/files/{team['file_id']}/share",
                         {"user_email": "bob@example.com", "permission": "edit"})
    assert r.status == 201, r
    links = []
    for file_id in (report["file_id"], report["file_id"], inside["file_id"]):
        r = await alice.post(f"/api/files/{file_id}/links", {})
        assert r.status == 201, r
        links.append(r.body["link_id"])
    assert (await alice.delete(f"/api/links/{links[1]}")).status == 204  # revoked: not counted

    top = await entries(alice, "/")
    assert top["Team"]["shared"] == {"people": 1, "links": 0}
    assert top["report.pdf"]["shared"] == {"people": 0, "links": 1}
    assert "shared" not in top["plain.txt"]
    assert (await entries(alice, "/Team"))["plan.txt"]["shared"] == {"people": 0, "links": 1}

    # The recipient, with edit access, is told nothing of the owner's links.
    mount = await entries(bob, "/Shared with me/Team")
    assert set(mount) == {"plan.txt"} and "shared" not in mount["plan.txt"]
