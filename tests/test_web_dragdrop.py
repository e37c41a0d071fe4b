"""Uploads of whole folders and drops (issue 14): the folder input (webkitdirectory), files and
folders dropped on the listing, an overall progress bar, a few files at a time, a big file
read from disk, and a block that fails once being sent again."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest
from playwright.async_api import Page, Route, expect

from driveproto.blocks import BLOCK_SIZE
from tests.browser import Web, screenshot
from tests.helpers import ApiClient
from tests.test_web_upload import assert_stored, progress

pytestmark = pytest.mark.asyncio(loop_scope="session")

MiB = 1024 * 1024

# A drop as the browser hands it over. Chromium builds a DataTransfer of File objects for a
# script, but never FileSystemEntry objects (those come only from a real drag from the
# desktop), so a dropped folder is a stand-in with the same interface: isFile/isDirectory,
# name, file(), and createReader().readEntries() handing out a few entries per call as
# Chromium's reader does (100 there, 3 here, so a small tree takes several calls).
DROP = """([selector, files, tree]) => {
  const fileEntry = (name, text) => ({isFile: true, isDirectory: false, name,
    file: (ok) => ok(new File([text], name))});
  const dirEntry = (name, children) => ({isFile: false, isDirectory: true, name,
    createReader() {
      let at = 0;
      return {readEntries(ok) {
        const batch = children.slice(at, at + 3);
        at += batch.length;
        setTimeout(() => ok(batch));
      }};
    }});
  const build = ([name, value]) => typeof value === 'string' ? fileEntry(name, value)
    : dirEntry(name, Object.entries(value).map(build));
  const dt = new DataTransfer();
  for (const [name, text] of Object.entries(files)) dt.items.add(new File([text], name));
  let dataTransfer = dt;
  if (tree) {
    const entries = Object.entries(tree).map(build);
    dataTransfer = {types: ['Files'], files: [],
                    items: entries.map((entry) => ({kind: 'file', webkitGetAsEntry: () => entry}))};
  }
  const target = document.querySelector(selector);
  for (const type of ['dragenter', 'dragover']) {
    target.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: dt}));
  }
  const drop = new Event('drop', {bubbles: true, cancelable: true});
  Object.defineProperty(drop, 'dataTransfer', {value: dataTransfer});
  return !target.dispatchEvent(drop); // true: the page took it (preventDefault)
}"""


async def open_folder(web: Web, alice_api: ApiClient, name: str) -> Page:
    await alice_api.mkdir("/" + name)
    page = await web.signed_in()
    await page.goto(f"{web.server.url}/#/files/{name}")
    await expect(page.get_by_role("heading", name=name)).to_be_visible()
    return page


def overall(page: Page):  # noqa: ANN201 - a Locator
    return page.get_by_role("progressbar", name="All uploads")


async def test_a_folder_tree_by_the_folder_input(web: Web, alice_api: ApiClient,
                                                 tmp_path: Path) -> None:
    tree = {"album/a.txt": b"alpha", "album/b.txt": b"bravo", "album/sub/c.txt": b"charlie",
            "album/sub/deep/d.bin": os.urandom(70_000), "album/sub/deep/e.txt": b"",
            "album/sub/f.txt": b"foxtrot"}
    for rel, data in tree.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    (tmp_path / "album" / "empty").mkdir()
    page = await open_folder(web, alice_api, "Inbox")
    await page.get_by_label("Upload folder").set_input_files(tmp_path / "album")
    uploads = page.get_by_role("region", name="Uploads")
    await expect(uploads.get_by_text("6 of 6 done")).to_be_visible(timeout=20_000)
    await expect(overall(page)).to_have_js_property("value", 1)
    await expect(uploads.get_by_role("alert")).to_have_count(0)
    await screenshot(page, "upload-folder")
    for rel, data in tree.items():
        folder, _, name = ("/Inbox/" + rel).rpartition("/")
        await assert_stored(alice_api, folder, name, data)
    # The folder input lists files only: an empty folder inside is not reported by the
    # browser (a drop is, below), so it is not made.
    assert sorted(await alice_api.listdir("/Inbox/album")) == ["a.txt", "b.txt", "sub"]
    await expect(page.get_by_role("link", name="album")).to_be_visible()


async def test_files_and_a_folder_dropped_on_the_listing(web: Web, alice_api: ApiClient) -> None:
    page = await open_folder(web, alice_api, "Drops")
    took = await page.evaluate(DROP, ["section.folder", {"one.txt": "one", "two.txt": "two two"}, None])
    assert took
    uploads = page.get_by_role("region", name="Uploads")
    await expect(uploads.get_by_text("2 of 2 done")).to_be_visible()
    await assert_stored(alice_api, "/Drops", "one.txt", b"one")
    await assert_stored(alice_api, "/Drops", "two.txt", b"two two")

    tree = {"Project": {"readme.md": "# hi", "notes": {}, "src": {
        **{f"m{i}.py": f"x = {i}\n" for i in range(7)}, "lib": {"deep.txt": "deep"}}},
        "loose.txt": "loose"}
    took = await page.evaluate(DROP, ["section.folder", {}, tree])
    assert took
    await expect(uploads.get_by_text("12 of 12 done")).to_be_visible(timeout=20_000)
    await expect(overall(page)).to_have_js_property("value", 1)
    await assert_stored(alice_api, "/Drops/Project", "readme.md", b"# hi")
    await assert_stored(alice_api, "/Drops/Project/src/lib", "deep.txt", b"deep")
    for i in range(7):
        await assert_stored(alice_api, "/Drops/Project/src", f"m{i}.py", f"x = {i}\n".encode())
    await assert_stored(alice_api, "/Drops", "loose.txt", b"loose")
    assert await alice_api.listdir("/Drops/Project/notes") == []  # the empty folder is made
    await expect(page.get_by_role("link", name="Project")).to_be_visible()


async def test_a_few_files_go_at_a_time(web: Web, alice_api: ApiClient) -> None:
    """Forty files dropped at once: three are on their way, the rest wait their turn (nothing
    of theirs read yet), the panel lists the next twenty and counts the others, and all finish
    once the network lets them."""
    held: list[Route] = []
    three = asyncio.Event()
    release = asyncio.Event()

    async def hold(route: Route) -> None:
        held.append(route)
        if len(held) == 3:
            three.set()
        await release.wait()
        await route.continue_()

    page = await open_folder(web, alice_api, "Many")
    await page.route("**/blocks/**", hold)
    files = {f"f{i:02}.bin": f"content {i}" for i in range(40)}
    await page.evaluate(DROP, ["section.folder", files, None])
    await asyncio.wait_for(three.wait(), 10)
    uploads = page.get_by_role("region", name="Uploads")
    waiting = uploads.get_by_role("listitem").filter(has_text="Waiting")
    await expect(waiting).to_have_count(20)
    await expect(uploads.get_by_role("listitem")).to_have_count(23)
    await expect(uploads.get_by_text("and 17 more waiting")).to_be_visible()
    for i in range(3, 23):
        await expect(progress(page, f"f{i:02}.bin")).to_have_js_property("value", 0)
    await expect(uploads.get_by_text("0 of 40 done")).to_be_visible()
    assert len(held) == 3
    release.set()
    await expect(uploads.get_by_text("40 of 40 done")).to_be_visible(timeout=30_000)
    await expect(uploads.get_by_role("listitem")).to_have_count(40)
    await expect(uploads.get_by_text("more waiting")).to_be_hidden()
    for name, text in files.items():
        await assert_stored(alice_api, "/Many", name, text.encode())


async def test_a_big_file_from_disk_reaches_100_percent(web: Web, alice_api: ApiClient,
                                                        tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(50):
            chunk = os.urandom(MiB)
            digest.update(chunk)
            f.write(chunk)
        f.write(b"tail")
        digest.update(b"tail")
    page = await web.signed_in()
    await page.get_by_label("Upload files").set_input_files(path)
    uploads = page.get_by_role("region", name="Uploads")
    await expect(uploads.get_by_text("1 of 1 done")).to_be_visible(timeout=120_000)
    await expect(progress(page, "big.bin")).to_have_js_property("value", 1)
    await expect(overall(page)).to_have_js_property("value", 1)
    await expect(uploads).to_contain_text("52.4 MB of 52.4 MB")  # bytes done of all
    entry = [e for e in (await alice_api.get("/api/files", params={"path": "/"})).body["entries"]
             if e["name"] == "big.bin"][0]
    assert entry["size"] == 50 * MiB + 4
    # Its SHA-256 through the API, read in a stream (not 50 MiB in a test's memory at once).
    got = hashlib.sha256()
    async with alice_api.session.get(
            f"{alice_api.base_url}/api/files/{entry['file_id']}/content",
            headers=alice_api.headers) as r:
        assert r.status == 200
        async for chunk in r.content.iter_chunked(MiB):
            got.update(chunk)
    assert got.hexdigest() == digest.hexdigest()


async def test_a_block_put_that_fails_once_is_sent_again(web: Web, alice_api: ApiClient) -> None:
    data = os.urandom(BLOCK_SIZE + 5000)
    attempts: list[str] = []

    async def fail_first(route: Route) -> None:
        attempts.append(route.request.url)
        if len(attempts) == 1:
            await route.abort("connectionreset")
        else:
            await route.continue_()

    page = await web.signed_in()
    await page.route("**/blocks/**", fail_first)
    await page.get_by_label("Upload files").set_input_files(
        [{"name": "flaky.bin", "mimeType": "application/octet-stream", "buffer": data}])
    uploads = page.get_by_role("region", name="Uploads")
    await expect(uploads.get_by_text("1 of 1 done")).to_be_visible()
    await expect(uploads.get_by_role("alert")).to_have_count(0)
    await assert_stored(alice_api, "/", "flaky.bin", data)
    assert len(attempts) == 3 and attempts[0] == attempts[1]  # the first block, twice
    # The browser logs the refused attempt; that line, and only it, is expected here.
    refused = [p for p in web.watch.problems if "net::ERR_CONNECTION_RESET" in p]
    assert len(refused) == 1, web.watch.problems
    web.watch.problems.remove(refused[0])


async def test_retry_after_a_network_drop_sends_only_what_is_missing(
        web: Web, alice_api: ApiClient) -> None:
    """The second block's PUT fails every time (the first try and its three retries): the file
    fails with its error and a Retry button, which goes on under the same grant and sends only
    that block."""
    data = os.urandom(BLOCK_SIZE + 7000)
    first, second = (hashlib.sha256(data[:BLOCK_SIZE]).hexdigest(),
                     hashlib.sha256(data[BLOCK_SIZE:]).hexdigest())
    puts: list[str] = []
    inits: list[str] = []

    async def drop_second(route: Route) -> None:
        puts.append(route.request.url)
        if second in route.request.url and puts.count(route.request.url) <= 4:
            await route.abort("connectionreset")
        else:
            await route.continue_()

    page = await web.signed_in()
    page.on("request", lambda r: inits.append(r.url) if "upload-init" in r.url else None)
    await page.route("**/blocks/**", drop_second)
    await page.get_by_label("Upload files").set_input_files(
        [{"name": "drop.bin", "mimeType": "application/octet-stream", "buffer": data}])
    uploads = page.get_by_role("region", name="Uploads")
    line = uploads.get_by_role("listitem").filter(has_text="drop.bin")
    await expect(line).to_contain_text("Failed", timeout=20_000)  # after 1 s + 2 s + 4 s
    await expect(line.get_by_role("alert")).to_contain_text("cannot be reached")
    assert [first in u for u in puts] == [True, False, False, False, False]
    await line.get_by_role("button", name="Retry upload of drop.bin").click()
    await expect(uploads.get_by_text("1 of 1 done")).to_be_visible()
    await expect(line.get_by_role("alert")).to_be_hidden()
    await expect(progress(page, "drop.bin")).to_have_js_property("value", 1)
    await assert_stored(alice_api, "/", "drop.bin", data)
    assert len(puts) == 6 and second in puts[-1]  # the first block was not sent again
    assert len(inits) == 1  # the same grant
    refused = [p for p in web.watch.problems if "net::ERR_CONNECTION_RESET" in p]
    assert len(refused) == 4, web.watch.problems
    for problem in refused:
        web.watch.problems.remove(problem)
