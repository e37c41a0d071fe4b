"""Accessibility of the web app (issue 14: "labels, focus order, contrast"), checked on the main
views in both colour schemes and at phone width.

* **Names:** Chromium's own accessibility tree (over CDP: what a screen reader is given) has a
  non-empty name for every control (button, link, field, checkbox, select) and image.
* **Contrast:** every visible run of text has WCAG AA contrast against the background it is
  drawn on (4.5:1; 3:1 for large text), computed from the styles the browser applied. Disabled
  controls are exempt, as in WCAG.
* **Focus order:** Tab walks the controls in document order (no positive tabindex anywhere),
  and every stop shows a visible focus indicator.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser import PHONE, Web, new_web
from tests.helpers import PASSWORD, ApiClient, upload
from tests.test_previews import png

pytestmark = pytest.mark.asyncio(loop_scope="session")

NAMED_ROLES = {"button", "link", "textbox", "searchbox", "checkbox", "combobox", "radio",
               "switch", "slider", "spinbutton", "listbox", "menuitem", "tab", "image", "img"}

CONTRAST_JS = """
() => {
  const parse = (c) => {
    const m = c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, under) => {
    const a = top[3];
    return [0, 1, 2].map((i) => top[i] * a + under[i] * (1 - a)).concat([1]);
  };
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  };
  const backdrop = (el) => {  // the colours under el, blended from the first opaque one up
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const style = getComputedStyle(e);
      if (style.backgroundImage !== 'none') return null;  // an image: not computable here
      const c = parse(style.backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let bg = parse(getComputedStyle(document.documentElement).backgroundColor);
    if (!bg || bg[3] < 1) bg = [255, 255, 255, 1];
    for (const layer of layers.reverse()) bg = over(layer, bg);
    return bg;
  };
  const bad = [];
  let checked = 0;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const text = walker.currentNode.textContent.trim();
    const el = walker.currentNode.parentElement;
    if (!text || !el) continue;
    const box = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    if (!box.width || !box.height || style.visibility === 'hidden') continue;
    if (el.closest(':disabled, .disabled, [aria-disabled=true], [aria-hidden=true], option')) {
      continue;
    }
    let opacity = 1;
    for (let e = el; e; e = e.parentElement) opacity *= Number(getComputedStyle(e).opacity);
    const bg = backdrop(el);
    if (!bg) continue;
    const color = parse(style.color);
    const fg = over([color[0], color[1], color[2], color[3] * opacity], bg);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (Number(style.fontWeight) >= 700 && size >= 18.66);
    checked++;
    if (ratio < (large ? 3 : 4.5)) {
      bad.push(`${text.slice(0, 40)} ${ratio.toFixed(2)}:1 (${style.color} on rgb(${bg.slice(0, 3).map(Math.round)}))`);
    }
  }
  return {checked, bad};
}
"""


async def unnamed_controls(page: Page) -> list[str]:
    """Controls and images that Chromium's accessibility tree gives no name."""
    cdp = await page.context.new_cdp_session(page)
    try:
        tree = await cdp.send("Accessibility.getFullAXTree")
    finally:
        await cdp.detach()
    missing = []
    for node in tree["nodes"]:
        role = (node.get("role") or {}).get("value")
        if node.get("ignored") or role not in NAMED_ROLES:
            continue
        if not str((node.get("name") or {}).get("value") or "").strip():
            missing.append(f"{role} (backend node {node.get('backendDOMNodeId')})")
    return missing


async def check_view(page: Page, view: str) -> None:
    assert not await unnamed_controls(page), (view, await unnamed_controls(page))
    result: dict[str, Any] = await page.evaluate(CONTRAST_JS)
    assert result["checked"] >= 3, (view, result)  # the check saw the page's text
    assert not result["bad"], (view, result["bad"])
    assert await page.locator("[tabindex]:not([tabindex='0']):not([tabindex='-1'])").count() == 0


async def tab_stops(page: Page, count: int) -> list[dict[str, Any]]:
    """Press Tab ``count`` times from the top of the page; where the focus went each time, whether it came
    after the previous stop in the document, and whether a focus indicator shows."""
    # The app puts the focus on the listing's first row; Tab from there wraps to the top.
    for _ in range(40):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.matches('.skip-link')"):
            break
    stops = []
    for i in range(count):
        if i:
            await page.keyboard.press("Tab")
        stops.append(await page.evaluate("""() => {
          const el = document.activeElement;
          const prev = window.__lastStop;
          window.__lastStop = el;
          // A visually hidden file input shows its focus on its label.
          const tiny = el.getBoundingClientRect().width <= 1;
          const shown = tiny && el.labels && el.labels.length ? el.labels[0] : el;
          const style = getComputedStyle(shown);
          const ring = (style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0)
            || style.boxShadow !== 'none';
          const box = shown.getBoundingClientRect();
          return {what: `${el.tagName.toLowerCase()} ${el.getAttribute('aria-label')
                          || el.textContent.trim().slice(0, 30)}`,
                  after: !prev || prev === el ||
                         !!(prev.compareDocumentPosition(el) & Node.DOCUMENT_POSITION_FOLLOWING),
                  ring, visible: box.width > 0 && box.height > 0};
        }"""))
    return stops


async def test_the_main_views_have_names_contrast_and_a_visible_focus_order(
        web: Web, alice_api: ApiClient) -> None:
    await alice_api.mkdir("/Projects")
    await upload(alice_api, "/photo.png", png(80, 60))
    doc = await upload(alice_api, "/notes.txt", b"v1")
    await upload(alice_api, "/notes.txt", b"v2")
    gone = await upload(alice_api, "/old.txt", b"old")
    assert (await alice_api.delete(f"/api/files/{gone['file_id']}")).status == 204

    page = await web.page()
    web.watch.allow(401, "/api/auth/session")  # signed out: the sign-in form
    await page.goto(web.server.url + "/")
    await expect(page.get_by_label("Email")).to_be_visible()
    await check_view(page, "sign-in")

    page = await web.signed_in()
    await check_view(page, "listing")
    stops = await tab_stops(page, 17)
    shown = "\n".join(map(str, stops))
    assert stops[0]["what"] == "a Skip to the listing", shown  # first, for keyboard users
    assert all(s["after"] for s in stops), shown  # document order
    assert all(s["ring"] and s["visible"] for s in stops), shown
    assert stops[-1]["what"].startswith("tr Projects"), shown  # then into the listing

    await page.get_by_role("row").filter(has_text="notes.txt").get_by_role("checkbox").check()
    await page.get_by_role("button", name="Versions").click()
    await expect(page.get_by_role("dialog")).to_be_visible()
    await check_view(page, "versions dialog")
    await page.keyboard.press("Escape")
    await page.get_by_role("button", name="Share").click()
    await expect(page.get_by_role("dialog")).to_be_visible()
    await check_view(page, "share dialog")
    await page.keyboard.press("Escape")
    assert doc["file_id"]

    await page.get_by_role("button", name="Grid view").click()
    await expect(page.get_by_role("gridcell").first).to_be_visible()
    await check_view(page, "grid")
    await page.get_by_role("button", name="Grid view").click()

    await page.get_by_role("link", name="Trash").click()
    await expect(page.get_by_role("row").filter(has_text="old.txt")).to_be_visible()
    await check_view(page, "trash")
    await page.get_by_text("alice@example.com").click()  # the account menu
    await check_view(page, "account menu")
    await page.get_by_role("link", name="Devices").click()
    await expect(page.get_by_role("heading", name="Devices")).to_be_visible()
    await check_view(page, "devices")


async def test_dark_scheme_phone_width_and_the_link_page_keep_contrast_and_names(
        web: Web, browser: Browser, alice_api: ApiClient) -> None:
    await upload(alice_api, "/photo.png", png(80, 60))
    folder = await alice_api.mkdir("/Projects")
    await upload(alice_api, "/Projects/plan.txt", b"plan")
    for scheme in ("dark", "light"):
        phone = await new_web(browser, web.server, viewport=PHONE,
                              color_scheme=scheme)
        try:
            r = await phone.context.request.post(f"{web.server.url}/api/auth/login", data={
                "email": "alice@example.com", "password": PASSWORD, "cookie": True})
            assert r.ok, await r.text()
            page = await phone.page()
            await page.goto(web.server.url + "/")
            await expect(page.get_by_role("row").filter(has_text="photo.png")).to_be_visible()
            await check_view(page, f"phone, {scheme}")
        finally:
            await phone.context.close()
        assert not phone.watch.problems, phone.watch.problems
    page = await web.signed_in()
    await page.emulate_media(color_scheme="dark")
    await check_view(page, "desktop, dark")

    link = await alice_api.post(f"/api/files/{folder['file_id']}/links", {"password": "pass word"})
    assert link.status == 201
    token_path = "/s/" + link.body["url"].rsplit("/s/", 1)[1]
    web.watch.allow(401, token_path)  # the page's first look, before the password
    anon = await web.page()
    await anon.goto(link.body["url"])
    await expect(anon.get_by_label("Password")).to_be_visible()
    await check_view(anon, "link page, password")
    await anon.get_by_label("Password").fill("pass word")
    await anon.get_by_role("button", name="Open").click()
    await expect(anon.get_by_role("button", name="plan.txt")).to_be_visible()
    await check_view(anon, "link page, folder")


async def test_the_checks_catch_what_they_look_for(web: Web) -> None:
    """The checkers themselves, on a page made to fail them (so a pass above means something)."""
    page = await web.page()
    await page.set_content(
        '<body style="background:#fff"><p style="color:#aaa">pale grey on white</p>'
        '<p style="color:#222">dark enough</p><button></button><img src="x.png">'
        '<button disabled style="color:#ccc">disabled is exempt</button></body>')
    result = await page.evaluate(CONTRAST_JS)
    assert result["checked"] == 2 and len(result["bad"]) == 1
    assert result["bad"][0].startswith("pale grey on white 2.3")
    missing = await unnamed_controls(page)
    assert sorted(m.split()[0] for m in missing) == ["button", "image"], missing
