"""The installable app (issue 14): the manifest and the service worker at the root, the worker
registering over the whole app, and offline the last listing read shown read-only with a
banner; on a phone the camera as an upload source."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser, expect

from tests.browser import PHONE, Web, new_web, screenshot
from tests.helpers import ApiClient, RunningServer
from tests.helpers import upload as upload_via_api
from tests.test_web_static import assert_page_headers, asset_root, get

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def pwa(browser: Browser, web_server: RunningServer) -> AsyncIterator[Web]:
    """The ``web`` fixture's context with service workers allowed (browser.py blocks them)."""
    w = await new_web(browser, web_server, service_workers="allow")
    try:
        yield w
    finally:
        await w.context.close()
    assert not w.watch.problems, "\n".join(w.watch.problems)


async def test_manifest_and_worker_are_served_at_the_root(web_server: RunningServer) -> None:
    server = web_server
    _, _, index = await get(server, "/")
    root = asset_root(index)
    assert b'<link rel="manifest" href="/manifest.webmanifest">' in index

    status, headers, body = await get(server, "/manifest.webmanifest")
    assert status == 200 and headers["Content-Type"] == "application/manifest+json"
    assert_page_headers(headers)
    assert headers["Cache-Control"] == "no-cache"
    manifest = json.loads(body)
    assert manifest["start_url"] == "/" and manifest["display"] == "standalone"
    assert manifest["name"] and manifest["theme_color"].startswith("#")
    sizes = {icon["sizes"]: icon["src"] for icon in manifest["icons"]}
    for size in ("192x192", "512x512"):
        assert sizes[size].startswith(root + "/")
        status, headers, png = await get(server, sizes[size])
        assert status == 200 and headers["Content-Type"] == "image/png"
        assert png.startswith(b"\x89PNG") and png[16:24] == (int(size.split("x")[0])).to_bytes(
            4, "big") * 2  # IHDR: width, height

    status, headers, sw = await get(server, "/sw.js")
    assert status == 200 and headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert_page_headers(headers)
    assert headers["Cache-Control"] == "no-cache"
    assert headers["Service-Worker-Allowed"] == "/"
    # The version and the assets to keep are written in: no placeholder is left.
    assert f"const APP = '{root}';".encode() in sw
    assert b"%APP%" not in sw and b"%ASSETS%" not in sw
    assert b'"js/main.js"' in sw and b'"css/app.css"' in sw
    # Not an asset under the version (its scope would be /app/<version>/ only).
    status, _, _ = await get(server, f"{root}/sw.js")
    assert status == 404


async def test_offline_the_last_listing_shows_read_only(pwa: Web, alice_api: ApiClient) -> None:
    web = pwa
    await alice_api.mkdir("/Trips")
    await upload_via_api(alice_api, "/Trips/map.pdf", b"%PDF-1.4 map")
    page = await web.signed_in()
    ready = await page.evaluate(
        "async () => (await navigator.serviceWorker.ready).scope")
    assert ready == web.server.url + "/"
    # Controlled from the next load on: read the folder under the worker, so that it keeps it.
    await page.reload()
    await page.wait_for_function("navigator.serviceWorker.controller !== null")
    await page.goto(web.server.url + "/#/files/Trips")
    await expect(page.get_by_role("link", name="map.pdf")).to_be_visible()
    banner = page.get_by_role("status").filter(has_text="Offline")
    await expect(banner).to_be_hidden()

    # The live poll, and the bell and storage bar's reads, get the worker's 503 `offline`
    # until the network is back.
    for path in ("/api/sync/cursor", "/api/sync/changes", "/api/files", "/api/notifications",
                 "/api/quota"):
        web.watch.allow(503, path)
    await web.context.set_offline(True)
    assert await page.evaluate("fetch('/api/auth/session').then(r => r.ok, () => 'failed')")
    await page.reload()
    await expect(page.get_by_role("heading", name="Trips")).to_be_visible()
    await expect(page.get_by_role("link", name="map.pdf")).to_be_visible()
    await expect(banner).to_be_visible()
    await expect(banner).to_contain_text("last listing read")
    # Read-only: the toolbar offers no change.
    await expect(page.get_by_role("button", name="New folder")).to_be_hidden()
    await expect(page.get_by_text("Upload files")).to_be_hidden()
    assert await page.get_by_label("Upload files").evaluate(
        "el => getComputedStyle(el).display") == "none"  # no tab stop to a picker either
    await screenshot(page, "offline")
    # A folder never read is not there to show: the API's shape, the worker's message.
    offline = await page.evaluate(
        "fetch('/api/files?path=/Nowhere').then(async r => [r.status, await r.json()])")
    assert offline[0] == 503 and offline[1]["error"]["code"] == "offline"
    # Writes are never answered from a cache, nor kept for later: they fail as they are.
    write = await page.evaluate("""fetch('/api/folders', {method: 'POST',
        headers: {'Content-Type': 'application/json'}, body: JSON.stringify({path: '/Later'})})
        .then(r => r.status, () => 'network error')""")
    assert write == "network error"
    # The browser's own log line for that refused write, expected here and nowhere else.
    refused = [p for p in web.watch.problems if "ERR_INTERNET_DISCONNECTED" in p]
    assert len(refused) == 1 and "/api/folders" in refused[0], web.watch.problems
    web.watch.problems.remove(refused[0])

    await web.context.set_offline(False)
    await expect(banner).to_be_hidden()
    await expect(page.get_by_role("button", name="New folder")).to_be_visible()
    assert "Later" not in await alice_api.listdir("/")


async def test_signing_out_drops_the_kept_listings(pwa: Web) -> None:
    web = pwa
    page = await web.signed_in()
    await page.evaluate("navigator.serviceWorker.ready")
    await page.reload()
    await page.wait_for_function("navigator.serviceWorker.controller !== null")
    await page.get_by_role("grid").wait_for()
    await page.wait_for_function("caches.has('drive-data')")
    await page.get_by_label("Account: alice@example.com").click()
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    await page.wait_for_function("caches.has('drive-data').then(has => !has)")


async def test_on_a_phone_the_camera_is_an_upload_source(
        browser: Browser, web_server: RunningServer) -> None:
    web = await new_web(browser, web_server, viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        page = await web.signed_in()
        camera = page.get_by_label("Take photo")
        await expect(camera).to_have_attribute("accept", "image/*,video/*")
        await expect(camera).to_have_attribute("capture", "environment")
        await expect(page.get_by_text("Take photo")).to_be_visible()
        # The plain file input stays a file chooser (no capture: the camera would be all).
        files = page.get_by_label("Upload files")
        assert await files.get_attribute("capture") is None
    finally:
        await web.context.close()
    assert not web.watch.problems, "\n".join(web.watch.problems)


async def test_the_camera_button_is_for_phones_only(web: Web) -> None:
    page = await web.signed_in()
    await expect(page.get_by_text("Take photo")).to_be_hidden()
    # Nor a tab stop: its input is out of the page too, the others stay.
    await expect(page.get_by_label("Take photo")).to_be_hidden()
    assert await page.get_by_label("Take photo").evaluate("el => getComputedStyle(el).display") \
        == "none"
    assert await page.get_by_label("Upload files").evaluate(
        "el => getComputedStyle(el).display") != "none"
