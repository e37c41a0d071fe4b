"""Search by name and zip downloads in the web app (issue 14): the page's search box and its
Download button for folders and selections, checked through the API and entry by entry."""

from __future__ import annotations

import asyncio
import hashlib
import io
import zipfile
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.browser import Web, screenshot
from tests.helpers import ApiClient, upload

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_search_finds_by_part_of_a_name_and_opens_the_folder(web: Web,
                                                                    alice_api: ApiClient) -> None:
    await alice_api.mkdir("/Taxes/2025")
    await upload(alice_api, "/Taxes/2025/Return-FINAL.pdf", b"%PDF-1.7")
    await upload(alice_api, "/notes.txt", b"nothing to find")
    page = await web.signed_in()
    box = page.get_by_role("searchbox", name="Search by name")
    await box.fill("final")
    await box.press("Enter")
    await expect(page.get_by_role("heading", name="Results for “final”")).to_be_visible()
    await expect(page.get_by_role("status").filter(has_text="1 result")).to_be_visible()
    result = page.get_by_role("link", name="Return-FINAL.pdf")
    await expect(result).to_be_visible()
    await screenshot(page, "search")
    await page.get_by_role("link", name="/Taxes/2025").click()
    await expect(page.get_by_role("heading", name="2025")).to_be_visible()
    # A search that finds nothing says so.
    await box.fill("zzzz-not-there")
    await box.press("Enter")
    await expect(page.get_by_role("status").filter(has_text="Nothing found.")).to_be_visible()


async def test_a_folder_and_a_selection_download_as_zips(web: Web, alice_api: ApiClient) -> None:
    files = {"Album/a.txt": b"first", "Album/deep/b.bin": bytes(range(256)) * 100}
    await alice_api.mkdir("/Album/empty")
    for path, data in files.items():
        await upload(alice_api, f"/{path}", data)
    await upload(alice_api, "/loose.txt", b"loose")
    page = await web.signed_in()
    await page.get_by_role("row").filter(has_text="Album").get_by_role("checkbox").check()
    async with page.expect_download() as info:
        await page.get_by_role("button", name="Download").click()
    download = await info.value
    assert download.suggested_filename == "Album.zip"
    body = await asyncio.to_thread(Path(await download.path()).read_bytes)
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        names = set(archive.namelist())
        assert {"Album/", "Album/empty/", "Album/deep/", "Album/a.txt", "Album/deep/b.bin"} <= names
        for path, data in files.items():
            assert hashlib.sha256(archive.read(path)).digest() == hashlib.sha256(data).digest()
    # Two items at once: one archive with both.
    await page.get_by_role("row").filter(has_text="loose.txt").get_by_role("checkbox").check()
    async with page.expect_download() as info:
        await page.get_by_role("button", name="Download").click()
    body = await asyncio.to_thread(Path(await (await info.value).path()).read_bytes)
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.read("loose.txt") == b"loose" and archive.read("Album/a.txt") == b"first"
