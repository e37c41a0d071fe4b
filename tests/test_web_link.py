"""A public link opened by a browser (issue 14): ``/s/{token}`` shows a page — a password
prompt when the link has one, a folder to browse, a file's preview and download — while API
clients keep getting JSON from the same address."""

from __future__ import annotations

import asyncio
import hashlib
import io
import zipfile
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.browser import Web, screenshot
from tests.helpers import ApiClient, RunningServer, upload
from tests.test_previews import png

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def make_link(owner: ApiClient, file_id: str, **options: object) -> tuple[str, str]:
    r = await owner.post(f"/api/files/{file_id}/links", options)
    assert r.status == 201, r
    return r.body["url"], r.body["link_id"]


async def test_a_password_link_to_a_folder_opened_anonymously(web: Web, alice_api: ApiClient
                                                             ) -> None:
    folder = await alice_api.mkdir("/Holiday")
    await alice_api.mkdir("/Holiday/Notes")
    notes = b"Day 1: <b>beach</b>\nDay 2: museum\n"
    await upload(alice_api, "/Holiday/Notes/diary.txt", notes)
    await upload(alice_api, "/Holiday/sunset.png", png(64, 32))
    url, _ = await make_link(alice_api, folder["file_id"], password="open sesame")
    token_path = "/s/" + url.rsplit("/s/", 1)[1]
    web.watch.allow(401, token_path)  # the page's first look, before the password
    web.watch.allow(403, token_path + "/unlock")  # the wrong password below

    page = await web.page()  # a fresh context: no account, no cookie
    await page.goto(url)
    await expect(page.get_by_role("heading", name="This link is protected")).to_be_visible()
    await page.get_by_label("Password").fill("wrong guess")
    await page.get_by_role("button", name="Open").click()
    await expect(page.get_by_role("alert")).to_have_text("wrong password")
    await page.get_by_label("Password").fill("open sesame")
    await page.get_by_role("button", name="Open").click()

    await expect(page.get_by_role("heading", name="Holiday")).to_be_visible()
    await expect(page.get_by_role("button", name="Notes/")).to_be_visible()
    await expect(page.get_by_role("button", name="sunset.png")).to_be_visible()
    await screenshot(page, "link-folder")
    async with page.expect_download() as info:
        await page.get_by_role("link", name="Download all (zip)").click()
    download = await info.value
    assert download.suggested_filename == "Holiday.zip"
    body = await asyncio.to_thread(Path(await download.path()).read_bytes)
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert set(archive.namelist()) == {"Holiday/", "Holiday/Notes/",
                                           "Holiday/Notes/diary.txt", "Holiday/sunset.png"}
        assert archive.read("Holiday/Notes/diary.txt") == notes
        assert archive.read("Holiday/sunset.png") == png(64, 32)
    await page.get_by_role("button", name="Notes/").click()
    await page.get_by_role("button", name="diary.txt").click()
    # The text is shown as text: the <b> is two characters, not bold markup.
    await expect(page.locator(".link-preview pre")).to_have_text(notes.decode().rstrip("\n"))
    assert await page.locator(".link-preview b").count() == 0
    async with page.expect_download() as info:
        await page.get_by_role("link", name="Download").click()
    saved = await asyncio.to_thread(Path(await (await info.value).path()).read_bytes)
    assert hashlib.sha256(saved).digest() == hashlib.sha256(notes).digest()
    await screenshot(page, "link-file")
    # Back goes back, within the link.
    await page.go_back()
    await expect(page.get_by_role("button", name="diary.txt")).to_be_visible()


async def test_a_file_link_shows_the_image_and_a_revoked_one_says_so(web: Web,
                                                                     alice_api: ApiClient
                                                                     ) -> None:
    photo = await upload(alice_api, "/cat.png", png(120, 80))
    url, link_id = await make_link(alice_api, photo["file_id"])
    page = await web.page()
    await page.goto(url)
    await expect(page.get_by_role("heading", name="cat.png")).to_be_visible()
    image = page.get_by_role("img", name="cat.png")
    await expect(image).to_be_visible()
    await page.wait_for_function("img => img.complete && img.naturalWidth === 120",
                                 arg=await image.element_handle())
    assert (await alice_api.delete(f"/api/links/{link_id}")).status == 204
    web.watch.allow(404, "/s/" + url.rsplit("/s/", 1)[1])
    await page.reload()
    await expect(page.get_by_role("alert")).to_have_text(
        "This link does not exist, or it was revoked.")


async def test_api_clients_still_get_json_from_the_link_address(web_server: RunningServer,
                                                                alice_api: ApiClient) -> None:
    doc = await upload(alice_api, "/doc.txt", b"text")
    url, _ = await make_link(alice_api, doc["file_id"])
    session = alice_api.session
    async with session.get(url) as r:
        assert r.status == 200 and (await r.json())["name"] == "doc.txt"
    async with session.get(url, headers={"Accept": "application/json"}) as r:
        assert (await r.json())["name"] == "doc.txt"
    for address in (url, url.rsplit("/", 1)[0] + "/not-a-real-token"):
        async with session.get(address, headers={"Accept": "text/html,*/*;q=0.8"}) as r:
            # The same page for any token: whether a link exists is not in the HTML.
            assert r.status == 200 and r.content_type == "text/html"
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
            assert r.headers["Referrer-Policy"] == "no-referrer"
            assert "doc.txt" not in await r.text()
