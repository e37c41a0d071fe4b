"""Sharing in the web app (issue 14): the share dialog shares a folder with a person (who sees
it in their own browser under Shared with me), changes and ends the share, and makes a link
with a password that a browser with no account opens; the listing marks what is shared."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from tests.browser import Web, new_web, screenshot
from tests.helpers import PASSWORD, ApiClient, upload
from tests.test_web_app import row

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_share_a_folder_with_bob_who_opens_a_file(web: Web, browser: Browser,
                                                        alice_api: ApiClient) -> None:
    plans = await alice_api.mkdir("/Plans")
    await upload(alice_api, "/Plans/budget.txt", b"numbers")
    page = await web.signed_in()
    await row(page, "Plans").click()
    await page.get_by_role("button", name="Share").click()
    dialog = page.get_by_role("dialog", name="Share “Plans”")
    await dialog.get_by_label("Share with (email)").fill("bob@example.com")
    await dialog.get_by_role("combobox", name="Permission", exact=True).select_option("edit")
    await dialog.get_by_role("button", name="Share", exact=True).click()
    person = dialog.get_by_role("combobox", name="Permission for bob@example.com")
    await expect(person).to_have_value("edit")
    shares = (await alice_api.get(f"/api/files/{plans['file_id']}/shares")).body["shares"]
    assert [(s["email"], s["permission"]) for s in shares] == [("bob@example.com", "edit")]
    await screenshot(page, "share-dialog")
    await person.select_option("view")
    await expect(page.get_by_text("bob@example.com can view now.")).to_be_visible()
    shares = (await alice_api.get(f"/api/files/{plans['file_id']}/shares")).body["shares"]
    assert [s["permission"] for s in shares] == ["view"]
    await dialog.get_by_role("button", name="Close").click()
    await expect(row(page, "Plans").get_by_role("img", name="Shared with 1 person")).to_be_visible()

    bob_web = await new_web(browser, web.server)
    try:
        bob = await bob_web.signed_in("bob@example.com")
        await bob.get_by_role("navigation", name="Places").get_by_role(
            "link", name="Shared with me").click()
        await row(bob, "Plans").get_by_role("link").click()
        await expect(bob.get_by_role("heading", name="Plans")).to_be_visible()
        budget = row(bob, "budget.txt")
        await expect(budget).to_be_visible()
        async with bob.expect_download() as info:
            await budget.get_by_role("link").click()
        download = await info.value
        assert download.suggested_filename == "budget.txt"
        assert await asyncio.to_thread(Path(await download.path()).read_bytes) == b"numbers"
        # A recipient may not share it on.
        await budget.click()
        await expect(bob.get_by_role("button", name="Share")).to_be_disabled()
    finally:
        await bob_web.context.close()
    assert not bob_web.watch.problems, bob_web.watch.problems

    # alice ends the share in the dialog.
    await row(page, "Plans").click()
    await page.get_by_role("button", name="Share").click()
    await dialog.get_by_role("button", name="Stop sharing with bob@example.com").click()
    await expect(dialog.get_by_text("Not shared with anyone.")).to_be_visible()
    assert (await alice_api.get(f"/api/files/{plans['file_id']}/shares")).body["shares"] == []


async def test_a_password_link_made_in_the_dialog_opens_anonymously(
        web: Web, browser: Browser, alice_api: ApiClient) -> None:
    folder = await alice_api.mkdir("/Photos")
    await upload(alice_api, "/Photos/beach.txt", b"sand")
    page = await web.signed_in()
    await row(page, "Photos").click()
    await page.get_by_role("button", name="Share").click()
    dialog = page.get_by_role("dialog", name="Share “Photos”")
    await dialog.get_by_label("Password (optional, 8 characters or more)").fill("open sesame")
    await dialog.get_by_role("button", name="Create link").click()
    url_box = dialog.get_by_role("textbox", name="New link")
    await expect(dialog.get_by_text("Link 1: password, download allowed, no expiry")).to_be_visible()
    url = await url_box.input_value()
    assert url.startswith(f"{web.server.url}/s/")
    links = (await alice_api.get(f"/api/files/{folder['file_id']}/links")).body["links"]
    assert [(link["has_password"], link["allow_download"]) for link in links] == [(True, True)]
    await web.context.grant_permissions(["clipboard-read", "clipboard-write"])
    await dialog.get_by_role("button", name="Copy link").click()
    await expect(page.get_by_text("Link copied.")).to_be_visible()
    assert await page.evaluate("navigator.clipboard.readText()") == url
    await dialog.get_by_role("button", name="Close").click()
    await expect(row(page, "Photos").get_by_role("img", name="Shared with 1 link")).to_be_visible()

    anon = await new_web(browser, web.server)
    token_path = "/s/" + url.rsplit("/s/", 1)[1]
    anon.watch.allow(401, token_path)
    try:
        visitor = await anon.page()
        await visitor.goto(url)
        await visitor.get_by_label("Password").fill("open sesame")
        await visitor.get_by_role("button", name="Open").click()
        await expect(visitor.get_by_role("heading", name="Photos")).to_be_visible()
        await expect(visitor.get_by_role("button", name="beach.txt")).to_be_visible()
    finally:
        await anon.context.close()
    assert not anon.watch.problems, anon.watch.problems

    # Revoked in the dialog: the link is gone.
    await row(page, "Photos").click()
    await page.get_by_role("button", name="Share").click()
    await dialog.get_by_role("button", name="Revoke link 1").click()
    await expect(dialog.get_by_text("No links.")).to_be_visible()
    assert (await alice_api.get(f"/api/files/{folder['file_id']}/links")).body["links"] == []


async def test_sharing_with_an_unknown_email_shows_the_api_message(web: Web,
                                                                   alice_api: ApiClient) -> None:
    folder = await alice_api.mkdir("/Private")
    web.watch.allow(404, f"/api/files/{folder['file_id']}/share")
    page = await web.signed_in()
    await row(page, "Private").click()
    await page.get_by_role("button", name="Share").click()
    dialog = page.get_by_role("dialog", name="Share “Private”")
    await dialog.get_by_label("Share with (email)").fill("nobody@example.com")
    await dialog.get_by_role("button", name="Share", exact=True).click()
    await expect(dialog.get_by_role("alert")).to_have_text(
        "no user with the email 'nobody@example.com'; they need an account first")
    await expect(dialog.get_by_text("Not shared with anyone.")).to_be_visible()
    # Files are shared by link only: the dialog of a file has no people section.
    await dialog.get_by_role("button", name="Close").click()
    await upload(alice_api, "/note.txt", b"n")
    await row(page, "note.txt").click()
    await page.get_by_role("button", name="Share").click()
    file_dialog = page.get_by_role("dialog", name="Share “note.txt”")
    await expect(file_dialog.get_by_role("button", name="Create link")).to_be_visible()
    await expect(file_dialog.get_by_label("Share with (email)")).to_have_count(0)


async def test_a_file_link_with_expiry_and_no_download_and_copy_without_a_clipboard(
        web: Web, alice_api: ApiClient) -> None:
    doc = await upload(alice_api, "/slides.txt", b"slides")
    page = await web.page()
    # A browser without the Clipboard API (plain http on a LAN address): the link is selected.
    await page.add_init_script("Object.defineProperty(navigator, 'clipboard', {value: undefined})")
    await web.context.request.post(f"{web.server.url}/api/auth/login", data={
        "email": "alice@example.com", "password": PASSWORD, "cookie": True})
    await page.goto(web.server.url + "/")
    await row(page, "slides.txt").click()
    await page.get_by_role("button", name="Share").click()
    dialog = page.get_by_role("dialog", name="Share “slides.txt”")
    await dialog.get_by_label("Expires (optional)").fill("2030-01-31T12:00")
    await dialog.get_by_label("Allow download").uncheck()
    await dialog.get_by_role("button", name="Create link").click()
    await expect(dialog.get_by_text(re.compile(
        r"^Link 1: no password, view only, expires .*2030$"))).to_be_visible()
    [link] = (await alice_api.get(f"/api/files/{doc['file_id']}/links")).body["links"]
    assert link["allow_download"] is False and not link["has_password"]
    # 12:00 in the browser's own zone, whatever it is.
    local_noon = await page.evaluate("new Date('2030-01-31T12:00').toISOString()")
    assert link["expires_at"] == local_noon.replace(".000Z", "Z")
    url_box = dialog.get_by_role("textbox", name="New link")
    await dialog.get_by_role("button", name="Copy link").click()
    await expect(url_box).to_be_focused()
    selected = await url_box.evaluate("i => i.value.slice(i.selectionStart, i.selectionEnd)")
    assert selected == await url_box.input_value()
    await expect(page.get_by_text("Press Ctrl+C to copy the selected link.")).to_be_visible()
