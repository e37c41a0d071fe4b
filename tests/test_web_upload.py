"""Uploads from the page (issue 14): files chosen in the file input go through the API's three
steps, hashed in the browser in 4 MiB blocks with WebCrypto, sending only the blocks the server
lacks, with a progress bar and an error line per file."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest
from playwright.async_api import Page, Route, expect

from driveproto.blocks import BLOCK_SIZE, content_checksum
from tests.browser import Web, screenshot
from tests.helpers import ApiClient, content
from tests.helpers import upload as upload_via_api

pytestmark = pytest.mark.asyncio(loop_scope="session")


def payload(name: str, data: bytes) -> dict:
    return {"name": name, "mimeType": "application/octet-stream", "buffer": data}


def blocks_of(data: bytes) -> list[str]:
    return [hashlib.sha256(data[i:i + BLOCK_SIZE]).hexdigest()
            for i in range(0, len(data), BLOCK_SIZE)]


async def file_named(client: ApiClient, folder: str, name: str) -> dict:
    r = await client.get("/api/files", params={"path": folder})
    assert r.status == 200, r
    found = [e for e in r.body["entries"] if e["name"] == name]
    assert found, (name, r.body)
    return found[0]


async def assert_stored(client: ApiClient, folder: str, name: str, data: bytes) -> None:
    """The server holds exactly ``data``: its SHA-256 through the content route, its checksum."""
    entry = await file_named(client, folder, name)
    assert entry["size"] == len(data)
    got = await content(client, entry["file_id"])
    assert got.status == 200 and hashlib.sha256(got.body or b"").hexdigest() == \
        hashlib.sha256(data).hexdigest()
    assert entry["checksum"] == content_checksum(blocks_of(data))


def progress(page: Page, name: str):  # noqa: ANN201 - a Locator
    return page.get_by_role("progressbar", name=f"Upload of {name}")


async def test_upload_two_files_by_the_file_input(web: Web, alice_api: ApiClient) -> None:
    small = os.urandom(100_000)
    big = os.urandom(BLOCK_SIZE + 12_345)  # two blocks, the last one short
    await alice_api.mkdir("/Inbox")
    page = await web.signed_in()
    await page.goto(web.server.url + "/#/files/Inbox")
    await expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
    puts: list[str] = []
    page.on("request", lambda r: puts.append(r.url) if r.method == "PUT" else None)
    await page.get_by_label("Upload files").set_input_files(
        [payload("small.bin", small), payload("big.bin", big)])
    uploads = page.get_by_role("region", name="Uploads")
    await expect(uploads.get_by_text("2 of 2 done")).to_be_visible()
    for name in ("small.bin", "big.bin"):
        await expect(progress(page, name)).to_have_js_property("value", 1)
    await expect(uploads.get_by_role("alert")).to_have_count(0)
    await screenshot(page, "upload-done")
    await assert_stored(alice_api, "/Inbox", "small.bin", small)
    await assert_stored(alice_api, "/Inbox", "big.bin", big)
    assert len(puts) == 3  # one per block, by PUT to the block route
    # The listing shows them (the page re-reads the folder it uploaded into).
    await expect(page.get_by_role("link", name="big.bin")).to_be_visible()
    await expect(page.get_by_role("link", name="small.bin")).to_be_visible()

    # The same content again under another name: the hashes tell the server it has every
    # block, so no block is sent, only upload-init and complete.
    await page.get_by_label("Upload files").set_input_files([payload("copy.bin", big)])
    await expect(uploads.get_by_text("3 of 3 done")).to_be_visible()
    await assert_stored(alice_api, "/Inbox", "copy.bin", big)
    assert len(puts) == 3


async def test_a_failed_file_shows_its_error_and_the_others_go_on(
        web: Web, alice_api: ApiClient) -> None:
    web.watch.allow(409, "/api/files/upload-init")
    await alice_api.mkdir("/clash")  # a folder where the file "clash" would go
    page = await web.signed_in()
    await page.get_by_label("Upload files").set_input_files(
        [payload("clash", b"refused"), payload("fine.txt", b"accepted"),
         payload("empty.txt", b"")])
    uploads = page.get_by_role("region", name="Uploads")
    await expect(uploads.get_by_text("3 of 3 done, 1 failed")).to_be_visible()
    failed = uploads.get_by_role("listitem").filter(has_text="clash")
    await expect(failed.get_by_role("alert")).to_have_text("a folder exists at this path")
    await expect(failed).to_contain_text("Failed")
    await assert_stored(alice_api, "/", "fine.txt", b"accepted")
    await assert_stored(alice_api, "/", "empty.txt", b"")


async def test_progress_shows_while_a_block_is_on_its_way(web: Web, alice_api: ApiClient) -> None:
    """A block held at the network layer: the bar stands between hashing and done, then
    finishes when it goes through."""
    data = os.urandom(BLOCK_SIZE + 1000)
    held = asyncio.Event()
    release = asyncio.Event()

    async def hold(route: Route) -> None:
        if held.is_set():
            await route.continue_()
            return
        held.set()
        await release.wait()
        await route.continue_()

    page = await web.signed_in()
    await page.route("**/blocks/**", hold)
    await page.get_by_label("Upload files").set_input_files([payload("video.mp4", data)])
    await asyncio.wait_for(held.wait(), 10)
    bar = progress(page, "video.mp4")
    await expect(page.get_by_role("region", name="Uploads")).to_contain_text("Sending")
    value = await bar.evaluate("bar => bar.value")
    assert 0.5 <= value < 1
    await screenshot(page, "upload-in-progress")
    release.set()
    await expect(bar).to_have_js_property("value", 1)
    await expect(page.get_by_role("region", name="Uploads")).to_contain_text("1 of 1 done")
    await assert_stored(alice_api, "/", "video.mp4", data)


async def test_cancel_stops_an_upload(web: Web, alice_api: ApiClient) -> None:
    data = os.urandom(BLOCK_SIZE + 10)
    held = asyncio.Event()

    async def hold(route: Route) -> None:
        held.set()  # never let it through: the cancel must end it

    page = await web.signed_in()
    await page.route("**/blocks/**", hold)
    await page.get_by_label("Upload files").set_input_files([payload("never.bin", data)])
    await asyncio.wait_for(held.wait(), 10)
    await page.get_by_role("button", name="Cancel upload of never.bin").click()
    uploads = page.get_by_role("region", name="Uploads")
    await expect(uploads.get_by_role("listitem")).to_contain_text("Cancelled")
    assert "never.bin" not in await alice_api.listdir("/")


async def test_a_name_that_exists_asks_replace_or_keep_both(web: Web, alice_api: ApiClient) -> None:
    await upload_via_api(alice_api, "/report.txt", b"first")
    page = await web.signed_in()
    uploads = page.get_by_role("region", name="Uploads")
    await page.get_by_label("Upload files").set_input_files([payload("Report.txt", b"second")])
    ask = page.get_by_role("dialog", name="“Report.txt” already exists")
    await ask.get_by_role("button", name="Keep both").click()
    await expect(uploads.get_by_text("1 of 1 done")).to_be_visible()
    await assert_stored(alice_api, "/", "report.txt", b"first")
    await assert_stored(alice_api, "/", "Report (1).txt", b"second")
    await expect(page.get_by_role("link", name="Report (1).txt")).to_be_visible()

    await page.get_by_label("Upload files").set_input_files([payload("report.txt", b"third")])
    await ask.or_(page.get_by_role("dialog", name="“report.txt” already exists")).get_by_role(
        "button", name="Replace").click()
    await expect(uploads.get_by_text("2 of 2 done")).to_be_visible()
    await assert_stored(alice_api, "/", "report.txt", b"third")
    entry = await file_named(alice_api, "/", "report.txt")
    versions = (await alice_api.get(f"/api/files/{entry['file_id']}/versions")).body["versions"]
    assert [v["size"] for v in versions] == [5, 5]  # "third" is version 2, "first" kept

    # Cancel uploads nothing.
    await page.get_by_label("Upload files").set_input_files([payload("report.txt", b"fourth")])
    await page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    await expect(page.get_by_role("dialog")).to_have_count(0)
    await expect(uploads.get_by_role("listitem")).to_have_count(2)
    await assert_stored(alice_api, "/", "report.txt", b"third")
