"""App passwords in the web app (issues 14 and 16): made on the devices page and shown once,
working for WebDAV at once, listed as a device, and revoked from the page."""

from __future__ import annotations

import aiohttp
import pytest
from playwright.async_api import expect

from tests.browser import Web, screenshot
from tests.dav_helpers import DavClient
from tests.helpers import ApiClient, upload

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_an_app_password_made_in_the_page_opens_webdav_until_revoked(
        web: Web, alice_api: ApiClient) -> None:
    await upload(alice_api, "/hello.txt", b"hello over WebDAV")
    page = await web.signed_in()
    await page.get_by_text("alice@example.com").click()
    await page.get_by_role("link", name="Devices").click()
    panel = page.get_by_role("region", name="App passwords (WebDAV)")
    await expect(panel.get_by_text("No app passwords yet.")).to_be_visible()
    await expect(panel.get_by_text(f"{web.server.url}/dav/")).to_be_visible()

    await panel.get_by_label("New app password for").fill("Phone files app")
    await panel.get_by_role("button", name="Create app password").click()
    secret = panel.get_by_role("textbox", name="App password for Phone files app")
    password = await secret.input_value()
    assert len(password) >= 20
    await expect(panel.get_by_role("row").filter(has_text="Phone files app")).to_be_visible()
    devices = page.get_by_role("table", name="Devices")
    await expect(devices.get_by_role("row").filter(has_text="Phone files app")).to_be_visible()
    await screenshot(page, "app-passwords")

    async with aiohttp.ClientSession() as session:
        dav = DavClient(web.server.url, "alice@example.com", password, session)
        r = await dav.call("GET", "/dav/hello.txt")
        assert r.status == 200 and r.body == b"hello over WebDAV"

        await panel.get_by_role("button", name="Revoke Phone files app").click()
        await page.get_by_role("dialog", name="Revoke “Phone files app”?").get_by_role(
            "button", name="Revoke").click()
        await expect(panel.get_by_text("No app passwords yet.")).to_be_visible()
        await expect(secret).to_be_hidden()  # the shown password goes with it
        await expect(devices.get_by_role("row").filter(has_text="Phone files app")
                     ).to_have_count(0)
        r = await dav.call("GET", "/dav/hello.txt")
        assert r.status == 401


async def test_a_bad_name_shows_the_api_message(web: Web) -> None:
    page = await web.signed_in()
    await page.goto(web.server.url + "/#/devices")
    panel = page.get_by_role("region", name="App passwords (WebDAV)")
    web.watch.allow(400, "/api/app-passwords")
    await panel.get_by_label("New app password for").fill("   ")
    await panel.get_by_role("button", name="Create app password").click()
    await expect(panel.get_by_role("alert")).not_to_be_empty()
    await expect(panel.get_by_role("alert")).to_be_visible()
