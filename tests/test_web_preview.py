"""Previews in the web app (issue 14): an image shown as itself, a text with markup shown as
text (through content?inline=1, which never serves a user's HTML as a page), and no Preview for
what the page cannot show."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.browser import Web, screenshot
from tests.helpers import ApiClient, upload
from tests.test_previews import png

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_an_image_and_a_text_are_previewed_a_folder_is_not(web: Web,
                                                                  alice_api: ApiClient) -> None:
    await upload(alice_api, "/photo.png", png(160, 90))
    await upload(alice_api, "/page.html", b"<h1>Hello</h1><script>window.pwned = 1</script>")
    await alice_api.mkdir("/Folder")
    page = await web.signed_in()
    rows = page.get_by_role("row")
    preview = page.get_by_role("button", name="Preview")

    await rows.filter(has_text="photo.png").get_by_role("checkbox").check()
    await preview.click()
    dialog = page.get_by_role("dialog", name="photo.png")
    image = dialog.get_by_role("img", name="photo.png")
    await expect(image).to_be_visible()
    await page.wait_for_function("img => img.complete && img.naturalWidth === 160",
                                 arg=await image.element_handle())
    await screenshot(page, "preview")
    await dialog.get_by_role("button", name="Close").click()
    await rows.filter(has_text="photo.png").get_by_role("checkbox").uncheck()

    await rows.filter(has_text="page.html").get_by_role("checkbox").check()
    await preview.click()
    dialog = page.get_by_role("dialog", name="page.html")
    await expect(dialog.locator("pre")).to_have_text(
        "<h1>Hello</h1><script>window.pwned = 1</script>")
    assert await dialog.locator("h1").count() == 0
    assert await page.evaluate("window.pwned") is None
    await dialog.get_by_role("button", name="Close").click()
    await rows.filter(has_text="page.html").get_by_role("checkbox").uncheck()

    await rows.filter(has_text="Folder").get_by_role("checkbox").check()
    await expect(preview).to_be_disabled()
