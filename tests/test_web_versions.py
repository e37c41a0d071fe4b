"""A file's versions in the web app (issue 14): the dialog lists each version with who made it
and from which device, downloads any one of them, and restores one after asking; the restored
content is checked through the API."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.browser import Web, screenshot
from tests.helpers import ApiClient, download_blocks, upload
from tests.test_web_app import row

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_versions_listed_downloaded_and_restored(web: Web, alice_api: ApiClient) -> None:
    v1, v2 = b"first draft\n", b"second draft, longer\n"
    first = await upload(alice_api, "/report.txt", v1)
    await upload(alice_api, "/report.txt", v2, base_version=first["version"])
    file_id = first["file_id"]
    page = await web.signed_in()
    await row(page, "report.txt").click()
    await page.get_by_role("button", name="Versions").click()
    dialog = page.get_by_role("dialog", name="Versions of “report.txt”")
    rows = dialog.get_by_role("row").filter(has=page.get_by_role("rowheader"))
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0)).to_contain_text("Version 2")
    await expect(rows.nth(0)).to_contain_text("current")
    await expect(rows.nth(1)).to_contain_text("Version 1")
    for r in (rows.nth(0), rows.nth(1)):  # who, and with which device
        await expect(r).to_contain_text("alice@example.com · alice-laptop")
    # The current version cannot be restored onto itself.
    await expect(dialog.get_by_role("button", name="Restore version 2")).to_have_count(0)
    await screenshot(page, "versions")

    async with page.expect_download() as info:
        await dialog.get_by_role("link", name="Download version 1").click()
    saved = await asyncio.to_thread(Path(await (await info.value).path()).read_bytes)
    assert saved == v1

    await dialog.get_by_role("button", name="Restore version 1").click()
    confirm = page.get_by_role("dialog", name="Restore version 1?")
    await confirm.get_by_role("button", name="Restore").click()
    await expect(confirm).to_be_hidden()
    await expect(rows).to_have_count(3)  # the listing in the dialog updated
    await expect(rows.nth(0)).to_contain_text("Version 3")
    await expect(rows.nth(0)).to_contain_text("restored from 1")
    await expect(rows.nth(0)).to_contain_text("alice@example.com · Web browser")
    current = await download_blocks(alice_api, file_id)
    assert hashlib.sha256(current).hexdigest() == hashlib.sha256(v1).hexdigest()
    await dialog.get_by_role("button", name="Close").click()
    await expect(row(page, "report.txt")).to_contain_text("12 bytes")  # the folder re-read


async def test_versions_is_for_a_single_file(web: Web, alice_api: ApiClient) -> None:
    await alice_api.mkdir("/Folder")
    await upload(alice_api, "/a.txt", b"a")
    page = await web.signed_in()
    versions = page.get_by_role("button", name="Versions")
    await row(page, "Folder").click()
    await expect(versions).to_be_disabled()
    await row(page, "a.txt").click()
    await expect(versions).to_be_enabled()
    await row(page, "Folder").click(modifiers=["Control"])
    await expect(versions).to_be_disabled()
