"""A folder of 10,000 entries in the page (issue 14): the first rows show while the rest of the
listing is still being read (the API's cursor, page by page), the DOM holds only the rows near
the view, and the keyboard and sorting still reach every entry."""

from __future__ import annotations

import asyncio
import time

import pytest
from playwright.async_api import Page, Route, expect

from driveproto.names import name_key
from driveserver import appkeys
from driveserver.meta.db import Tx
from tests.browser import Web, screenshot
from tests.helpers import ApiClient

pytestmark = pytest.mark.asyncio(loop_scope="session")

ENTRIES = 10_000


def row(page: Page, name: str):  # noqa: ANN201 - a Locator
    return page.get_by_role("row").filter(has=page.get_by_role("link", name=name, exact=True))


async def fill(web: Web, client: ApiClient, path: str) -> None:
    """ENTRIES folders written straight into the database (through the API it would take
    minutes); folders need no blocks or versions."""
    top = await client.mkdir(path)

    async def unit(tx: Tx) -> None:
        workspace = await tx.fetchval("SELECT workspace_id FROM files WHERE id = ?",
                                      (top["file_id"],))
        rows = [(f"{top['file_id']}-{i}", workspace, top["file_id"], f"item {i:05d}",
                 name_key(f"item {i:05d}"), tx.now) for i in range(ENTRIES)]
        await tx.executemany(
            "INSERT INTO files (id, workspace_id, parent_id, name, name_key, is_directory,"
            " version, size, created_at, modified_at) VALUES (?1, ?2, ?3, ?4, ?5, 1, 1, 0, ?6, ?6)",
            rows)
    await web.server.app[appkeys.DB].write(unit, offload=True)


async def test_a_folder_of_10000_entries_shows_at_once_and_renders_in_steps(
        web: Web, alice_api: ApiClient) -> None:
    await fill(web, alice_api, "/big")
    page = await web.signed_in()
    later_pages = asyncio.Event()
    release = asyncio.Event()
    pages: list[str] = []

    async def hold_later_pages(route: Route) -> None:
        pages.append(route.request.url)
        if "cursor=" in route.request.url:
            later_pages.set()
            await release.wait()
        await route.continue_()

    await page.route("**/api/files?*", hold_later_pages)
    started = time.monotonic()
    await page.goto(web.server.url + "/#/files/big")
    await expect(row(page, "item 00000")).to_be_visible()
    first_rows = time.monotonic() - started
    # The first rows are on screen while the next page of the listing is still held back.
    await asyncio.wait_for(later_pages.wait(), 10)
    status = page.locator(".listing-status")
    await expect(status).to_have_text("200 items, loading more…")
    release.set()
    await expect(status).to_have_text(f"{ENTRIES:,} items")
    everything = time.monotonic() - started
    assert "limit=200" in pages[0] and len(pages) == 3, pages  # 200, then two pages of 5,000
    await assert_few_rows(page)
    print(f"first rows after {first_rows:.2f} s, all {ENTRIES} entries after {everything:.2f} s")
    assert first_rows < 5 and everything < 15

    # The keyboard reaches the end, and the rows on the way were never all in the DOM.
    await row(page, "item 00000").click()
    await page.keyboard.press("End")
    await expect(row(page, f"item {ENTRIES - 1:05d}")).to_be_focused()
    await expect(row(page, "item 00000")).to_have_count(0)
    await assert_few_rows(page)
    await page.keyboard.press("ArrowUp")
    await expect(row(page, f"item {ENTRIES - 2:05d}")).to_be_focused()
    # A change elsewhere re-reads the folder; the selection and the focus, far past the first
    # page, stay where they were.
    await alice_api.mkdir("/big/a new one")
    await expect(status).to_have_text(f"{ENTRIES + 1:,} items")
    await expect(row(page, f"item {ENTRIES - 2:05d}")).to_be_focused()
    await expect(row(page, f"item {ENTRIES - 2:05d}")).to_have_attribute("aria-selected", "true")
    # Scrolling brings the rows of the middle.
    await page.evaluate("window.scrollTo(0, document.body.scrollHeight / 2)")
    await expect(row(page, "item 05000")).to_be_visible()
    await assert_few_rows(page)
    # Sorting by name the other way puts the last entry first.
    await page.evaluate("window.scrollTo(0, 0)")
    await page.get_by_role("button", name="Name", exact=True).click()
    await expect(page.locator("tbody td.name a").first).to_have_text(f"item {ENTRIES - 1:05d}")
    await assert_few_rows(page)
    await screenshot(page, "listing-10000")


async def assert_few_rows(page: Page) -> None:
    rendered = await page.locator("tbody tr[data-index]").count()
    assert 0 < rendered <= 150, f"{rendered} rows in the DOM for {ENTRIES} entries"
