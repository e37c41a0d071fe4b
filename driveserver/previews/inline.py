"""Which files a browser may show inline, and as what.

The app's origin must never serve user content that the browser would run: an uploaded
``.html`` or ``.svg`` opened inline on the app's origin could read the page's CSRF token and
act as the user. So inline content gets a type from a short allow-list chosen by the name's
extension (never from the bytes, never the uploader's say), everything text-like, HTML and
SVG included, is plain text, and every inline answer carries a ``sandbox`` CSP (no script, no
same-origin access), ``nosniff`` and ``frame-ancestors 'self'``. What is not on the list is
served as an attachment, as without ``inline``.
"""

from __future__ import annotations

_MEDIA = {
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".gif": "image/gif",
    ".webp": "image/webp", ".avif": "image/avif", ".bmp": "image/bmp",
    ".mp3": "audio/mpeg", ".m4a": "audio/mp4", ".ogg": "audio/ogg", ".oga": "audio/ogg",
    ".opus": "audio/ogg", ".wav": "audio/wav", ".flac": "audio/flac",
    ".mp4": "video/mp4", ".m4v": "video/mp4", ".webm": "video/webm", ".ogv": "video/ogg",
    ".mov": "video/quicktime",
    ".pdf": "application/pdf",
}
_TEXT = {
    ".txt", ".md", ".markdown", ".rst", ".csv", ".tsv", ".log", ".json", ".yaml", ".yml",
    ".toml", ".ini", ".cfg", ".conf", ".xml", ".html", ".htm", ".svg", ".css", ".js", ".mjs",
    ".ts", ".py", ".rb", ".go", ".rs", ".java", ".kt", ".c", ".h", ".cc", ".cpp", ".hpp",
    ".cs", ".php", ".sh", ".bash", ".zsh", ".sql", ".tex", ".swift", ".lua", ".pl", ".r",
}
# No script, no plugins, no same-origin access for whatever the browser renders; images and
# media still display. A PDF needs the browser's viewer, which a sandboxed document may not
# use, so it gets the same rules without the sandbox (the viewer runs PDF scripts in its own
# isolated process, never with this origin's rights).
_CSP = "default-src 'none'; img-src 'self' data:; media-src 'self'; style-src 'unsafe-inline';" \
       " frame-ancestors 'self'"


def inline_type(name: str) -> str | None:
    """The Content-Type to show ``name`` inline as, or None for "download only"."""
    dot = name.rfind(".")
    ext = name[dot:].lower() if dot > 0 else ""
    if ext in _TEXT:
        return "text/plain; charset=utf-8"
    return _MEDIA.get(ext)


def inline_headers(content_type: str) -> dict[str, str]:
    csp = _CSP if content_type == "application/pdf" else f"{_CSP}; sandbox"
    return {"Content-Type": content_type, "Content-Security-Policy": csp,
            "X-Content-Type-Options": "nosniff", "Content-Disposition": "inline"}
