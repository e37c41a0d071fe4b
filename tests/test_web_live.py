"""Live updates (issue 14): the open page long-polls the change feed and re-reads what it shows
when something changes elsewhere, without a reload: changes through the API by another client,
and files a ``drive-sync`` daemon uploads from a laptop's folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from tests.browser import Web
from tests.helpers import ApiClient, upload
from tests.sync_helpers import Device

pytestmark = pytest.mark.asyncio(loop_scope="session")


def row(page: Page, name: str):  # noqa: ANN201 - a Locator
    return page.get_by_role("row").filter(has=page.get_by_role("link", name=name, exact=True))


async def mark(page: Page) -> None:
    """A value only this load of the page has: gone if the page reloads."""
    await page.evaluate("window.__loaded_once = true")


async def still_the_same_load(page: Page) -> bool:
    return await page.evaluate("window.__loaded_once === true")


async def test_changes_by_another_client_appear_in_the_open_folder(
        web: Web, alice_api: ApiClient) -> None:
    docs = await alice_api.mkdir("/Docs")
    page = await web.signed_in()
    await mark(page)
    await alice_api.mkdir("/From the laptop")
    await expect(row(page, "From the laptop")).to_be_visible()
    made = await upload(alice_api, "/notes.txt", b"written elsewhere")
    await expect(row(page, "notes.txt")).to_be_visible()
    r = await alice_api.patch(f"/api/files/{made['file_id']}", {"path": "/renamed.txt"})
    assert r.status == 200, r
    await expect(row(page, "renamed.txt")).to_be_visible()
    await expect(row(page, "notes.txt")).to_have_count(0)
    r = await alice_api.delete(f"/api/files/{docs['file_id']}")
    assert r.status == 204, r
    await expect(row(page, "Docs")).to_have_count(0)
    # Inside the folder that is open, too, and a new version's size shows.
    await page.get_by_role("link", name="From the laptop").click()
    await expect(page.get_by_role("heading", name="From the laptop")).to_be_visible()
    await upload(alice_api, "/From the laptop/a.txt", b"1")
    await expect(row(page, "a.txt").locator("td.size")).to_have_text("1 byte")
    await upload(alice_api, "/From the laptop/a.txt", b"12")
    await expect(row(page, "a.txt").locator("td.size")).to_have_text("2 bytes")
    assert await still_the_same_load(page)


async def test_a_file_a_sync_daemon_uploads_appears_without_reload(
        web: Web, tmp_path: Path) -> None:
    laptop = Device("laptop", tmp_path / "laptop-config", tmp_path / "Laptop")
    await laptop.init(web.server)
    page = await web.signed_in()
    await mark(page)
    laptop.write("from-the-daemon.txt", "synced by drive-sync")
    laptop.start_daemon(tmp_path / "laptop.log")
    try:
        await expect(row(page, "from-the-daemon.txt")).to_be_visible(timeout=30_000)
        laptop.write("Reports/q3.txt", "a folder and a file")
        await expect(row(page, "Reports")).to_be_visible(timeout=30_000)
    finally:
        assert laptop.stop_daemon() == 0
    assert await still_the_same_load(page)
