"""The account in the web app (issue 14): the storage bar, the devices page (a device removed
there loses its token; this browser is marked and removing it warns and signs out), and the
notifications bell, which counts a share as it arrives and clears when read."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Browser, expect

from tests.browser import Web, new_web
from tests.helpers import ApiClient, upload

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_the_quota_shows_what_is_used(web: Web, alice_api: ApiClient) -> None:
    await upload(alice_api, "/big.bin", b"x" * 1_500_000)
    page = await web.signed_in()
    await page.get_by_text("alice@example.com").click()
    total = (await alice_api.get("/api/quota")).body["total"]
    assert total > 1_500_000
    await expect(page.get_by_text(re.compile(r"^1\.5 MB of .+ used$"))).to_be_visible()
    assert await page.get_by_role("progressbar").evaluate("p => p.value") == 1_500_000


async def test_a_device_removed_in_the_page_loses_its_token(web: Web,
                                                            alice_api: ApiClient) -> None:
    assert (await alice_api.get("/api/quota")).status == 200
    page = await web.signed_in()
    await page.get_by_text("alice@example.com").click()
    await page.get_by_role("link", name="Devices").click()
    await expect(page.get_by_role("heading", name="Devices")).to_be_visible()
    table = page.get_by_role("table", name="Devices")
    this_browser = table.get_by_role("row").filter(has_text="this browser")
    await expect(this_browser).to_contain_text("Web browser")
    await expect(table.get_by_role("row").filter(has_text="alice-laptop")).to_be_visible()
    await page.get_by_role("button", name="Remove alice-laptop").click()
    confirm = page.get_by_role("dialog", name="Remove “alice-laptop”?")
    await confirm.get_by_role("button", name="Remove").click()
    await expect(table.get_by_role("row").filter(has_text="alice-laptop")).to_have_count(0)
    assert (await alice_api.get("/api/quota")).status == 401

    # This browser: a warning first, then signed out.
    await this_browser.get_by_role("button").click()
    warn = page.get_by_role("dialog", name="Remove this browser?")
    await expect(warn).to_contain_text("signs you out here")
    await warn.get_by_role("button", name="Cancel").click()
    await expect(page.get_by_role("heading", name="Devices")).to_be_visible()
    await this_browser.get_by_role("button").click()
    await warn.get_by_role("button", name="Remove").click()
    await expect(page.get_by_role("heading", name="Sign in to Drive")).to_be_visible()
    await expect(page.get_by_text("This browser was removed from your devices.")).to_be_visible()


async def test_the_bell_counts_a_share_and_clears_when_read(web: Web, browser: Browser,
                                                            alice_api: ApiClient) -> None:
    folder = await alice_api.mkdir("/Team")
    bob_web = await new_web(browser, web.server)
    try:
        bob = await bob_web.signed_in("bob@example.com")
        bell = bob.locator("details.bell > summary")
        await expect(bell).to_have_attribute("aria-label", "Notifications, none unread")
        r = await alice_api.post(f"/api/files/{folder['file_id']}/share",
                                 {"user_email": "bob@example.com", "permission": "view"})
        assert r.status == 201, r
        # The page's long poll wakes with the share; the bell re-reads its count.
        await expect(bell).to_have_attribute("aria-label", "Notifications, 1 unread")
        await expect(bell).to_contain_text("1")
        await bell.click()
        note = bob.get_by_role("list", name="Notifications").get_by_role("listitem")
        await expect(note).to_contain_text("alice@example.com shared /Shared with me/Team")
        await bob.get_by_role("button", name="Mark all read").click()
        await expect(bell).to_have_attribute("aria-label", "Notifications, none unread")
        bob_api = await web.server.login("bob@example.com")
        assert (await bob_api.get("/api/notifications")).body["unread_count"] == 0
    finally:
        await bob_web.context.close()
    assert not bob_web.watch.problems, bob_web.watch.problems
