"""The web app in a real browser (issue 14): signing in and out, the folder listing and what can
be done in it, the trash, and the page's defences. Every check goes through the page as a user
would (roles and labels), and what the page did is checked through the API."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import Page, expect

from tests.browser import PHONE, Web, new_web, screenshot
from tests.helpers import PASSWORD, ApiClient, upload

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def sign_in_with_the_form(page: Page, email: str, password: str) -> None:
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password", exact=True).fill(password)
    await page.get_by_role("button", name="Sign in").click()


def row(page: Page, name: str):  # noqa: ANN201 - a Locator
    return page.get_by_role("row").filter(has=page.get_by_role("link", name=name, exact=True))


async def test_sign_in_and_out_with_the_form(web: Web, alice_api: ApiClient) -> None:
    page = await web.page()
    response = await page.goto(web.server.url + "/")
    assert response is not None
    assert response.headers["content-security-policy"].startswith("default-src 'self'; script-src")
    await expect(page.get_by_role("heading", name="Sign in to Drive")).to_be_visible()
    await sign_in_with_the_form(page, "alice@example.com", PASSWORD)
    await expect(page.get_by_role("heading", name="My drive")).to_be_visible()
    await expect(page.get_by_text("alice@example.com")).to_be_visible()
    devices = (await alice_api.get("/api/devices")).body["devices"]
    assert [d["name"] for d in devices if d["type"] == "web"] == ["Web browser"]
    # A reload keeps the session: the cookie is all the page needs.
    await page.reload()
    await expect(page.get_by_role("heading", name="My drive")).to_be_visible()
    await page.get_by_text("alice@example.com").click()
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in to Drive")).to_be_visible()
    await expect(page.get_by_text("You are signed out.")).to_be_visible()
    devices = (await alice_api.get("/api/devices")).body["devices"]
    assert [d for d in devices if d["type"] == "web"] == []
    assert await web.context.cookies() == []
    await page.reload()
    await expect(page.get_by_role("heading", name="Sign in to Drive")).to_be_visible()


async def test_a_wrong_password_shows_the_api_message_and_the_throttle_says_when(
        web: Web) -> None:
    web.watch.allow(401, "/api/auth/login")
    web.watch.allow(429, "/api/auth/login")
    page = await web.page()
    await page.goto(web.server.url + "/")
    alert = page.get_by_role("alert")
    for _ in range(3):
        await sign_in_with_the_form(page, "alice@example.com", "not the password")
        await expect(alert).to_have_text("wrong email or password")
        await page.get_by_role("button", name="Sign in").wait_for()
    # The fourth is refused even with the right password: 429 with Retry-After.
    await sign_in_with_the_form(page, "alice@example.com", PASSWORD)
    await expect(alert).to_have_text(
        re.compile(r"^too many failed logins; try again later Try again in \d+ s\.$"))
    await expect(page.get_by_role("heading", name="Sign in to Drive")).to_be_visible()


async def test_create_a_folder_rename_and_move_it(web: Web, alice_api: ApiClient) -> None:
    web.watch.allow(409, "/api/folders")
    await alice_api.mkdir("/Archive")
    page = await web.signed_in()
    await page.get_by_role("button", name="New folder").click()
    dialog = page.get_by_role("dialog", name="New folder")
    await dialog.get_by_label("Folder name").fill("Projects")
    await dialog.get_by_role("button", name="Create").click()
    await expect(dialog).to_be_hidden()
    await expect(row(page, "Projects")).to_have_attribute("aria-selected", "true")
    assert sorted(await alice_api.listdir("/")) == ["Archive", "Projects"]
    # A name that is taken: the API's message, in the dialog, which stays open to fix it.
    await page.get_by_role("button", name="New folder").click()
    await dialog.get_by_label("Folder name").fill("archive")
    await dialog.get_by_role("button", name="Create").click()
    await expect(dialog.get_by_role("alert")).to_contain_text("exists")
    await dialog.get_by_role("button", name="Cancel").click()

    await page.get_by_role("button", name="Rename").click()
    rename = page.get_by_role("dialog", name="Rename “Projects”")
    await rename.get_by_label("New name").fill("Plans")
    await rename.get_by_role("button", name="Rename").click()
    await expect(row(page, "Plans")).to_be_visible()
    assert sorted(await alice_api.listdir("/")) == ["Archive", "Plans"]

    await page.get_by_role("button", name="Move").click()
    move = page.get_by_role("dialog", name="Move “Plans”")
    await expect(move.get_by_role("button", name="Plans")).to_be_disabled()  # not into itself
    await move.get_by_role("button", name="Archive").click()
    await move.get_by_role("button", name="Move to “Archive”").click()
    await expect(move).to_be_hidden()
    await expect(row(page, "Plans")).to_have_count(0)
    assert await alice_api.listdir("/") == ["Archive"]
    assert await alice_api.listdir("/Archive") == ["Plans"]
    await row(page, "Archive").get_by_role("link").click()
    await expect(page.get_by_role("heading", name="Archive")).to_be_visible()
    await expect(row(page, "Plans")).to_be_visible()
    await expect(page.get_by_role("navigation", name="Breadcrumb")).to_have_text(
        re.compile("My drive.*Archive"))


async def test_delete_to_the_trash_restore_and_purge(web: Web, alice_api: ApiClient) -> None:
    await alice_api.mkdir("/Old")
    await upload(alice_api, "/Old/inside.txt", b"kept with its folder")
    await upload(alice_api, "/letter.txt", b"dear")
    await upload(alice_api, "/stays.txt", b"untouched")
    page = await web.signed_in()
    await page.get_by_role("checkbox", name="Select Old").check()
    await page.get_by_role("checkbox", name="Select letter.txt").check()
    await expect(page.get_by_text("2 selected")).to_be_visible()
    await page.get_by_role("button", name="Delete").click()
    await expect(row(page, "Old")).to_have_count(0)
    await expect(row(page, "letter.txt")).to_have_count(0)
    assert await alice_api.listdir("/") == ["stays.txt"]

    await page.get_by_role("link", name="Trash").click()
    trash = page.get_by_role("table", name="Trash")
    await expect(trash.get_by_role("row")).to_have_count(3)  # a header and two items
    await screenshot(page, "trash")
    await page.get_by_role("button", name="Restore letter.txt").click()
    await expect(trash.get_by_role("row")).to_have_count(2)
    assert sorted(await alice_api.listdir("/")) == ["letter.txt", "stays.txt"]

    await page.get_by_role("button", name="Delete Old forever").click()
    confirm = page.get_by_role("dialog", name="Delete “Old” forever?")
    await confirm.get_by_role("button", name="Delete forever").click()
    await expect(page.get_by_text("The trash is empty.")).to_be_visible()
    assert (await alice_api.get("/api/trash")).body["entries"] == []
    await page.get_by_role("link", name="My drive").first.click()
    await expect(row(page, "letter.txt")).to_be_visible()


async def test_the_keyboard_moves_selects_opens_and_goes_up(web: Web,
                                                          alice_api: ApiClient) -> None:
    for name in ("a", "b", "c"):
        await alice_api.mkdir(f"/K/{name}")
    await upload(alice_api, "/K/b/deep.txt", b"deep")
    await upload(alice_api, "/K/deep-sibling.txt", b"a file after the folders")
    page = await web.signed_in()
    await page.goto(web.server.url + "/#/files/K")
    await expect(page.get_by_role("heading", name="K")).to_be_visible()
    await row(page, "a").click()
    await expect(row(page, "a")).to_be_focused()
    await page.keyboard.press("ArrowDown")
    await expect(row(page, "b")).to_be_focused()
    await expect(row(page, "b")).to_have_attribute("aria-selected", "true")
    await expect(row(page, "a")).to_have_attribute("aria-selected", "false")
    await page.keyboard.press("Shift+ArrowDown")
    await expect(page.get_by_text("2 selected")).to_be_visible()
    await page.keyboard.press("Control+a")
    await expect(page.get_by_text("4 selected")).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(page.get_by_text("selected")).to_have_count(0)
    # The mouse: Ctrl-click adds one, Shift-click selects the range from the last click.
    await row(page, "a").click()
    await row(page, "c").click(modifiers=["Control"])
    await expect(page.get_by_text("2 selected")).to_be_visible()
    await expect(row(page, "b")).to_have_attribute("aria-selected", "false")
    await row(page, "b").click()
    await row(page, "deep-sibling.txt").click(modifiers=["Shift"])
    await expect(page.get_by_text("3 selected")).to_be_visible()
    await expect(row(page, "a")).to_have_attribute("aria-selected", "false")
    await screenshot(page, "listing")
    await row(page, "b").click()
    await page.keyboard.press("Enter")  # opens b
    await expect(page.get_by_role("heading", name="b")).to_be_visible()
    await expect(row(page, "deep.txt")).to_be_visible()
    await expect(row(page, "deep.txt")).to_be_focused()
    await page.keyboard.press("Backspace")
    await expect(page.get_by_role("heading", name="K")).to_be_visible()
    await page.keyboard.press("Alt+ArrowUp")
    await expect(page.get_by_role("heading", name="My drive")).to_be_visible()
    await expect(row(page, "K")).to_be_visible()


async def test_sorting_by_size_and_date_and_readable_sizes(web: Web,
                                                          alice_api: ApiClient) -> None:
    await upload(alice_api, "/small.txt", b"x" * 10)
    await upload(alice_api, "/big.bin", b"x" * 2_500_000)
    await upload(alice_api, "/mid.txt", b"x" * 1500)
    await alice_api.mkdir("/folder")
    page = await web.signed_in()
    names = page.locator("tbody td.name a")
    await expect(names).to_have_text(["folder", "big.bin", "mid.txt", "small.txt"])
    await expect(row(page, "big.bin").locator("td.size")).to_have_text("2.5 MB")
    await expect(row(page, "mid.txt").locator("td.size")).to_have_text("1.5 kB")
    await expect(row(page, "small.txt").locator("td.size")).to_have_text("10 bytes")
    await page.get_by_role("button", name="Size", exact=True).click()
    await expect(page.get_by_role("columnheader", name="Size")).to_have_attribute(
        "aria-sort", "ascending")
    await expect(names).to_have_text(["folder", "small.txt", "mid.txt", "big.bin"])
    await page.get_by_role("button", name="Size", exact=True).click()
    await expect(names).to_have_text(["folder", "big.bin", "mid.txt", "small.txt"])
    await page.get_by_role("button", name="Modified", exact=True).click()  # oldest first
    await expect(names).to_have_text(["folder", "small.txt", "big.bin", "mid.txt"])
    await page.get_by_role("button", name="Name", exact=True).click()
    await expect(names).to_have_text(["folder", "big.bin", "mid.txt", "small.txt"])


async def test_a_file_downloads_by_its_link(web: Web, alice_api: ApiClient) -> None:
    await upload(alice_api, "/hello.txt", b"hello from the server")
    page = await web.signed_in()
    async with page.expect_download() as download:
        await page.get_by_role("link", name="hello.txt").click()
    value = await download.value
    assert value.suggested_filename == "hello.txt"
    path = await value.path()
    assert path.read_bytes() == b"hello from the server"  # a few bytes: no need for a thread


async def test_shared_with_me_is_browsable_like_any_folder(web: Web, alice_api: ApiClient) -> None:
    bob = await web.server.login("bob@example.com")
    team = await bob.mkdir("/Team")
    await upload(bob, "/Team/plan.txt", b"the plan")
    r = await bob.post(f"/api/files/{team['file_id']}/share",
                       {"user_email": "alice@example.com", "permission": "view"})
    assert r.status == 201, r
    page = await web.signed_in()
    await page.get_by_role("navigation", name="Places").get_by_role(
        "link", name="Shared with me").click()
    await expect(page.get_by_role("heading", name="Shared with me")).to_be_visible()
    await expect(row(page, "Team")).to_contain_text("view only")
    await expect(page.get_by_role("button", name="New folder")).to_be_disabled()
    await row(page, "Team").get_by_role("link").click()
    await expect(row(page, "plan.txt")).to_be_visible()
    await expect(page.get_by_role("navigation", name="Breadcrumb")).to_have_text(
        re.compile("My drive.*Shared with me.*Team"))


async def test_names_are_shown_as_text_never_as_markup(web: Web, alice_api: ApiClient) -> None:
    name = '<img src=x onerror="window.__owned=1">.txt'
    await upload(alice_api, "/" + name, b"harmless")
    page = await web.signed_in()
    await expect(page.get_by_role("link", name=name)).to_be_visible()
    assert await page.evaluate("window.__owned") is None
    assert await page.locator("tbody img[src=x]").count() == 0


async def test_a_request_with_the_cookie_but_no_csrf_token_is_refused(
        web: Web, alice_api: ApiClient) -> None:
    web.watch.allow(403, "/api/folders")
    page = await web.signed_in()
    forged = await page.evaluate("""async () => {
        const r = await fetch('/api/folders', {method: 'POST', credentials: 'same-origin',
            headers: {'Content-Type': 'application/json'}, body: JSON.stringify({path: '/forged'})});
        return {status: r.status, body: await r.json()};
    }""")
    assert forged["status"] == 403 and forged["body"]["error"]["code"] == "csrf_failed"
    assert "forged" not in await alice_api.listdir("/")
    # The same request with the session's token is the page's own: it works.
    made = await page.evaluate("""async () => {
        const s = await (await fetch('/api/auth/session')).json();
        const r = await fetch('/api/folders', {method: 'POST', headers: {
            'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf_token},
            body: JSON.stringify({path: '/made'})});
        return r.status;
    }""")
    assert made == 201 and await alice_api.listdir("/") == ["made"]


async def test_change_the_password_then_sign_in_with_the_new_one(web: Web) -> None:
    web.watch.allow(401, "/api/auth/login")
    page = await web.signed_in()
    await page.get_by_text("alice@example.com").click()
    await page.get_by_role("button", name="Change password").click()
    dialog = page.get_by_role("dialog", name="Change password")
    await dialog.get_by_label("Current password").fill(PASSWORD)
    await dialog.get_by_label("New password (at least 8 characters)").fill("a new long secret")
    await dialog.get_by_label("New password again").fill("a new long secret")
    await dialog.get_by_role("button", name="Change password").click()
    await expect(page.get_by_text("Your password was changed. Sign in with the new one.")
                 ).to_be_visible()
    await sign_in_with_the_form(page, "alice@example.com", PASSWORD)
    await expect(page.get_by_role("alert")).to_have_text("wrong email or password")
    await sign_in_with_the_form(page, "alice@example.com", "a new long secret")
    await expect(page.get_by_role("heading", name="My drive")).to_be_visible()


async def test_phone_width(web: Web, alice_api: ApiClient) -> None:
    await alice_api.mkdir("/Photos from the holiday in a long folder name")
    await upload(alice_api, "/notes.txt", b"x" * 1234)
    phone = await new_web(web.context.browser, web.server, viewport=PHONE, is_mobile=True,
                          has_touch=True)
    try:
        page = await phone.signed_in()
        await expect(row(page, "notes.txt")).to_be_visible()
        await expect(page.get_by_role("button", name="New folder")).to_be_visible()
        await expect(page.get_by_text("Upload files")).to_be_visible()
        assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        await screenshot(page, "phone")
    finally:
        await phone.context.close()
    assert not phone.watch.problems, phone.watch.problems


async def test_a_revoked_browser_session_brings_back_the_sign_in_form(
        web: Web, alice_api: ApiClient) -> None:
    web.watch.allow(401, "/api/trash")
    web.watch.allow(401, "/api/sync/changes")
    page = await web.signed_in()
    devices = (await alice_api.get("/api/devices")).body["devices"]
    [browser] = [d for d in devices if d["type"] == "web"]
    r = await alice_api.delete(f"/api/devices/{browser['device_id']}")  # "sign out that browser"
    assert r.status == 204, r
    await page.get_by_role("link", name="Trash").click()
    await expect(page.get_by_role("heading", name="Sign in to Drive")).to_be_visible()
    await expect(page.get_by_text("Your session has ended. Sign in again.")).to_be_visible()
