"""Previews for the web app (issue 14): thumbnails made by the server, and inline content that
can never run as a page on the app's origin."""

from __future__ import annotations

import asyncio
import io
from typing import Any

from PIL import Image

from tests.helpers import ApiClient, HealthzProbe, RunningServer, upload


def png(width: int, height: int, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


async def get(client: ApiClient, path: str, headers: dict[str, str] | None = None
              ) -> tuple[int, Any, bytes]:
    async with client.session.get(client.base_url + path,
                                  headers={**client.headers, **(headers or {})}) as r:
        return r.status, r.headers, await r.read()


async def test_a_thumbnail_is_a_small_webp_of_the_image_and_answers_304_when_unchanged(
        alice: ApiClient) -> None:
    made = await upload(alice, "/photo.png", png(1000, 600))
    status, headers, body = await get(alice, f"/api/files/{made['file_id']}/thumbnail?size=256")
    assert status == 200 and headers["Content-Type"] == "image/webp"
    with Image.open(io.BytesIO(body)) as thumb:
        assert thumb.format == "WEBP" and thumb.size == (256, 154)
    again, _, _ = await get(alice, f"/api/files/{made['file_id']}/thumbnail?size=256",
                            {"If-None-Match": headers["ETag"]})
    assert again == 304
    small, _, body64 = await get(alice, f"/api/files/{made['file_id']}/thumbnail?size=64")
    with Image.open(io.BytesIO(body64)) as thumb:
        assert small == 200 and max(thumb.size) == 64


async def test_thumbnails_follow_read_access(server: RunningServer, alice: ApiClient,
                                             bob: ApiClient) -> None:
    folder = await alice.mkdir("/Photos")
    made = await upload(alice, "/Photos/cat.png", png(300, 300))
    path = f"/api/files/{made['file_id']}/thumbnail"
    assert (await get(bob, path))[0] == 404  # not hers to show, and not said to exist
    r = await alice.post(f"/api/files/{folder['file_id']}/share",
                         {"user_email": "bob@example.com", "permission": "view"})
    assert r.status == 201, r
    assert (await get(bob, path))[0] == 200
    assert (await get(server.anonymous(), path))[0] == 401


async def test_what_is_not_an_image_gets_a_clear_415_and_bad_sizes_a_400(
        alice: ApiClient) -> None:
    text = await upload(alice, "/notes.txt", b"hello")
    fake = await upload(alice, "/fake.jpg", b"not a jpeg at all" * 100)
    photo = await upload(alice, "/p.png", png(10, 10))
    for file_id in (text["file_id"], fake["file_id"]):
        status, _, body = await get(alice, f"/api/files/{file_id}/thumbnail")
        assert status == 415 and b"not_previewable" in body, body
    for size in ("100", "abc", "-1", "99999999999999999999"):
        status, _, body = await get(alice, f"/api/files/{photo['file_id']}/thumbnail?size={size}")
        assert status == 400 and b"invalid_query" in body


async def test_a_decompression_bomb_is_refused_without_stalling_anyone(
        server: RunningServer, alice: ApiClient) -> None:
    """A 20,000 × 20,000 PNG of one colour is a few hundred KB and 1.2 GB decoded."""
    bomb = await upload(alice, "/bomb.png", png(20_000, 20_000, (0, 0, 0)))
    async with HealthzProbe(server.url) as probe:
        results = await asyncio.gather(*(
            get(alice, f"/api/files/{bomb['file_id']}/thumbnail?size={s}")
            for s in (64, 128, 256, 512) * 3))
    assert all(status == 415 for status, _, _ in results)
    probe.check(within=1.0)


async def test_inline_content_is_never_a_page_on_the_app_s_origin(alice: ApiClient) -> None:
    cases = {
        "/a.png": ("image/png", True),
        "/page.html": ("text/plain; charset=utf-8", True),
        "/drawing.svg": ("text/plain; charset=utf-8", True),
        "/script.js": ("text/plain; charset=utf-8", True),
        "/doc.pdf": ("application/pdf", False),
        "/clip.mp4": ("video/mp4", True),
    }
    for path, (content_type, sandboxed) in cases.items():
        made = await upload(alice, path, b"<script>alert(1)</script>")
        status, headers, body = await get(alice, f"/api/files/{made['file_id']}/content?inline=1")
        assert status == 200 and body == b"<script>alert(1)</script>"
        assert headers["Content-Type"] == content_type, path
        assert headers["Content-Disposition"] == "inline"
        assert headers["X-Content-Type-Options"] == "nosniff"
        csp = headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and ("sandbox" in csp) == sandboxed, (path, csp)
    # Anything else, or without ?inline=1, is a download as it always was.
    for path, query in (("/tool.exe", "?inline=1"), ("/a2.png", "")):
        made = await upload(alice, path, b"MZ....")
        status, headers, _ = await get(alice, f"/api/files/{made['file_id']}/content{query}")
        assert status == 200 and headers["Content-Type"] == "application/octet-stream"
        assert headers["Content-Disposition"].startswith("attachment")
