"""Thumbnails of images, made by the server (Pillow) and kept in a bounded memory cache.

A thumbnail is derived content, so it is treated as the file itself: the route checks that the
asker may read the file before anything is looked up, and the cache is keyed by the content's
checksum and the size (two users reading the same bytes may share an entry; nobody reaches one
without read access to a file with those bytes). Nothing is written to disk: the block store
sees only ciphertext, and a plaintext thumbnail folder would undo that. A restart empties the
cache; making a 256-px thumbnail of a photo takes tens of milliseconds.

Images are hostile input: the source may be at most :data:`MAX_SOURCE_BYTES`, the decoded image
at most :data:`MAX_PIXELS` (Pillow's decompression-bomb check is made an error, not a warning),
and decoding runs in a worker thread, a few at a time, so the event loop never waits on it.
"""

from __future__ import annotations

import asyncio
import io
import warnings
from collections import OrderedDict

from PIL import Image, ImageOps, UnidentifiedImageError

SIZES = (64, 128, 256, 512)
MAX_SOURCE_BYTES = 64 * 1024 * 1024
MAX_PIXELS = 50_000_000
# Raster formats Pillow decodes safely enough; never SVG (a script) or anything else.
FORMATS = {"JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"}
EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
CONTENT_TYPE = "image/webp"


class NotAnImage(Exception):
    """The bytes are not an image this server makes thumbnails of (or one too large)."""


def has_image_name(name: str) -> bool:
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in EXTENSIONS


def render(data: bytes, size: int) -> bytes:
    """A WebP of at most ``size`` px on its longer side, turned upright (EXIF orientation)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=sorted(FORMATS)) as source:
                width, height = source.size
                if width * height > MAX_PIXELS:
                    raise NotAnImage(f"the image has {width}×{height} pixels, more than"
                                     f" {MAX_PIXELS:,}")
                source.draft("RGB", (size, size))  # JPEG: decode at a reduced scale
                img: Image.Image = ImageOps.exif_transpose(source)
                img.thumbnail((size, size))
                if img.mode not in ("RGB", "RGBA"):
                    img = img.convert("RGBA" if "A" in img.getbands() or "transparency"
                                      in img.info else "RGB")
                out = io.BytesIO()
                img.save(out, "WEBP", quality=80)
                return out.getvalue()
        except (UnidentifiedImageError, Image.DecompressionBombError,
                Image.DecompressionBombWarning, OSError, ValueError, SyntaxError) as exc:
            raise NotAnImage(f"not an image this server can read ({type(exc).__name__})") \
                from None


class ThumbnailCache:
    """Thumbnails by (checksum, size), least recently used first out, at most ``max_bytes``."""

    def __init__(self, max_bytes: int = 32 * 1024 * 1024, concurrency: int = 2) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._bytes = 0
        self._slots = asyncio.Semaphore(concurrency)

    def get(self, checksum: str, size: int) -> bytes | None:
        key = (checksum, size)
        data = self._entries.get(key)
        if data is not None:
            self._entries.move_to_end(key)
        return data

    def put(self, checksum: str, size: int, data: bytes) -> None:
        key = (checksum, size)
        if key in self._entries or len(data) > self.max_bytes:
            return
        self._entries[key] = data
        self._bytes += len(data)
        while self._bytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self._bytes -= len(old)

    @property
    def slots(self) -> asyncio.Semaphore:
        """Held while a thumbnail's source is read and rendered: at most ``concurrency`` source
        images (up to :data:`MAX_SOURCE_BYTES` each) are in memory at once."""
        return self._slots

    @staticmethod
    async def render(data: bytes, size: int) -> bytes:
        """:func:`render` in a worker thread (the caller holds a slot)."""
        return await asyncio.to_thread(render, data, size)
