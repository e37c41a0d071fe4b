"""The grid view of the web app (issue 14): tiles with thumbnails made by the server for images
(and only for images), kept as the chosen view, moved through by the keyboard, and a thumbnail
that follows a new version."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Page, expect

from tests.browser import Web, screenshot
from tests.helpers import ApiClient, upload
from tests.test_previews import png

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def thumbnail_width(page: Page, name: str) -> int:
    """The natural width of the thumbnail in the tile of ``name``, once it has loaded."""
    img = page.get_by_role("gridcell").filter(has_text=name).locator(".thumb img")
    handle = await img.element_handle()
    await page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=handle)
    return int(await img.evaluate("img => img.naturalWidth"))


async def test_the_grid_shows_thumbnails_of_images_only_and_stays_chosen(
        web: Web, alice_api: ApiClient) -> None:
    await upload(alice_api, "/wide.png", png(640, 320))
    await upload(alice_api, "/small.png", png(40, 30, (20, 120, 20)))
    await upload(alice_api, "/notes.txt", b"not a picture")
    await alice_api.mkdir("/Album")
    page = await web.signed_in()
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/thumbnail" in r.url else None)

    toggle = page.get_by_role("button", name="Grid view")
    await expect(toggle).to_have_attribute("aria-pressed", "false")
    await toggle.click()
    await expect(toggle).to_have_attribute("aria-pressed", "true")
    grid = page.get_by_role("grid", name="My drive")
    await expect(grid.get_by_role("gridcell")).to_have_count(4)
    # The server's thumbnail: 256 px on the longer side, never larger than the image.
    assert await thumbnail_width(page, "wide.png") == 256
    assert await thumbnail_width(page, "small.png") == 40
    for name in ("notes.txt", "Album"):
        assert await grid.get_by_role("gridcell").filter(has_text=name).locator(
            ".thumb img:not(.icon)").count() == 0
    assert len(asked) == 2 and all("size=256" in u and "version=1" in u for u in asked), asked
    await screenshot(page, "grid")

    # The keyboard: Home, then Right moves tile by tile; the grid sorts by its own control.
    await grid.get_by_role("gridcell").first.focus()
    await page.keyboard.press("Home")
    await expect(grid.get_by_role("gridcell").first).to_have_attribute("aria-selected", "true")
    await page.keyboard.press("ArrowRight")
    second = grid.get_by_role("gridcell").nth(1)
    await expect(second).to_have_attribute("aria-selected", "true")
    await expect(second).to_be_focused()
    await page.get_by_role("combobox", name="Sort by").select_option(label="Largest first")
    # Folders first, as in the list; then the largest file.
    await expect(grid.get_by_role("gridcell").locator(".tile-name")).to_have_text(
        ["Album", "wide.png", "small.png", "notes.txt"])

    # Kept for the next visit.
    await page.reload()
    await expect(page.get_by_role("button", name="Grid view")).to_have_attribute(
        "aria-pressed", "true")
    await expect(page.get_by_role("grid", name="My drive").get_by_role("gridcell")
                 ).to_have_count(4)
    await page.get_by_role("button", name="Grid view").click()
    await expect(page.get_by_role("row").filter(has_text="notes.txt")).to_be_visible()


async def test_a_new_version_gets_a_new_thumbnail_without_reload(web: Web,
                                                                 alice_api: ApiClient) -> None:
    await upload(alice_api, "/photo.png", png(300, 100))
    page = await web.signed_in()
    await page.get_by_role("button", name="Grid view").click()
    assert await thumbnail_width(page, "photo.png") == 256
    await upload(alice_api, "/photo.png", png(100, 300))  # another client, a new version
    img = page.get_by_role("gridcell").filter(has_text="photo.png").locator(".thumb img")
    await expect(img).to_have_attribute("src", re.compile(r"version=2(&|$)"))
    # Portrait now: 256 px high, so narrower.
    assert await thumbnail_width(page, "photo.png") < 256

