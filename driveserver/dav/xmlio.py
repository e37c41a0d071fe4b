"""WebDAV XML in and out.

In: request bodies (PROPFIND, PROPPATCH, LOCK) are read with a hard size limit and parsed by
defusedxml, which refuses DTDs, entities and external references (no billion laughs, no
network), so a hostile body costs bounded memory and time. Out: multistatus and lock answers
are written as strings (escaped here), which is much faster than building trees for a listing
of 10,000 entries.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

from aiohttp import web
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from ..httputil import read_body
from .errors import DavError

DAV = "DAV:"
MAX_BODY = 1024 * 1024  # bytes of a PROPFIND, PROPPATCH or LOCK body
MAX_ELEMENTS = 10_000  # elements in one body (properties named, values' children)
MAX_DEPTH = 64  # levels of nesting
XML_HEADER = '<?xml version="1.0" encoding="utf-8"?>\n'


async def read_xml(request: web.Request) -> ET.Element | None:
    """The request's XML body, or None when it has none. 400 for anything not well-formed,
    413 past ``MAX_BODY``."""
    raw = await read_body(request, MAX_BODY, "a WebDAV XML body")
    if not raw.strip():
        return None
    try:
        root = fromstring(raw, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ET.ParseError, DefusedXmlException, ValueError) as exc:
        raise DavError(400, f"the XML body is not well-formed: {exc}") from None
    count, deepest, stack = 0, 0, [(root, 1)]
    while stack:  # by hand: the serialiser that stores property values recurses
        elem, depth = stack.pop()
        count, deepest = count + 1, max(deepest, depth)
        stack.extend((child, depth + 1) for child in elem)
    if count > MAX_ELEMENTS:
        raise DavError(413, f"the XML body has {count} elements; at most {MAX_ELEMENTS}")
    if deepest > MAX_DEPTH:
        raise DavError(400, f"the XML body is nested {deepest} deep; at most {MAX_DEPTH}")
    return root


def split_tag(tag: str) -> tuple[str, str]:
    """``{ns}name`` -> (ns, name); a tag in no namespace -> ("", name)."""
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return "", tag


def tag_xml(ns: str, name: str, inner: str | None = None) -> str:
    """An element named (``ns``, ``name``), empty or around ``inner`` (already XML)."""
    if ns == DAV:
        open_, close = f"D:{name}", f"D:{name}"
    elif ns:
        open_, close = f"X:{name} xmlns:X={quoteattr(ns)}", f"X:{name}"
    else:
        open_, close = f'{name} xmlns=""', name
    return f"<{open_}/>" if inner is None else f"<{open_}>{inner}</{close}>"


def element_xml(elem: ET.Element) -> str:
    """An element of a request serialised on its own (its namespaces declared on it), to be
    stored and given back later inside another document."""
    return ET.tostring(elem, encoding="unicode", short_empty_elements=True)


def text(value: str) -> str:
    return escape(value)


def error_body(condition: str | None, message: str) -> str:
    """A ``DAV:error`` body naming the precondition that failed (RFC 4918 section 16)."""
    inner = f"<D:{condition}/>" if condition else ""
    return (f'{XML_HEADER}<D:error xmlns:D="DAV:">{inner}'
            f'<X:message xmlns:X="urn:drive">{escape(message)}</X:message></D:error>')


def multistatus(responses: list[str]) -> str:
    return f'{XML_HEADER}<D:multistatus xmlns:D="DAV:">{"".join(responses)}</D:multistatus>'


def xml_response(body: str, status: int = 207, headers: dict[str, str] | None = None
                 ) -> web.Response:
    return web.Response(status=status, body=body.encode("utf-8"), headers=headers,
                        content_type="application/xml", charset="utf-8")
