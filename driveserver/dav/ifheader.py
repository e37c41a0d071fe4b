"""The ``If`` request header of RFC 4918 section 10.4: lists of lock tokens and entity tags,
each list untagged (about the request URL) or tagged with a resource.

Parsing only; :mod:`driveserver.dav.locking` evaluates the lists against the tree and the
locks. A header that does not parse is a 400.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import DavError

MAX_IF_BYTES = 16 * 1024


@dataclass(frozen=True)
class Condition:
    negated: bool
    kind: str  # "token" or "etag"
    value: str


@dataclass
class IfList:
    resource: str | None  # the tag (a URL), None for the request URL
    conditions: list[Condition] = field(default_factory=list)


def parse_if(header: str) -> list[IfList]:
    if len(header) > MAX_IF_BYTES:
        raise DavError(400, "the If header is too long")
    lists: list[IfList] = []
    i, n = 0, len(header)
    tag: str | None = None
    tagged: bool | None = None

    def bad(why: str) -> DavError:
        return DavError(400, f"malformed If header: {why}")

    while True:
        while i < n and header[i] in " \t":
            i += 1
        if i >= n:
            break
        c = header[i]
        if c == "<":  # a resource tag
            end = header.find(">", i)
            if end < 0:
                raise bad("unterminated resource tag")
            if tagged is False:
                raise bad("tagged and untagged lists mixed")
            tagged, tag = True, header[i + 1: end]
            i = end + 1
            continue
        if c != "(":
            raise bad(f"unexpected {c!r}")
        if tagged is None:
            tagged = False
        if tagged and tag is None:
            raise bad("a list without its resource")
        current = IfList(tag)
        i += 1
        while True:
            while i < n and header[i] in " \t":
                i += 1
            if i >= n:
                raise bad("unterminated list")
            if header[i] == ")":
                i += 1
                break
            negated = False
            if header.startswith("Not", i):
                negated = True
                i += 3
                while i < n and header[i] in " \t":
                    i += 1
            if i < n and header[i] == "<":
                end = header.find(">", i)
                if end < 0:
                    raise bad("unterminated state token")
                current.conditions.append(Condition(negated, "token", header[i + 1: end]))
                i = end + 1
            elif i < n and header[i] == "[":
                end = header.find("]", i)
                if end < 0:
                    raise bad("unterminated entity tag")
                current.conditions.append(Condition(negated, "etag", header[i + 1: end]))
                i = end + 1
            else:
                raise bad("a condition must be a <state token> or an [entity tag]")
        if not current.conditions:
            raise bad("an empty list")
        lists.append(current)
    if not lists:
        raise bad("no list")
    return lists


def submitted_tokens(lists: list[IfList]) -> set[str]:
    """Every lock token the header names (not negated): the tokens the client holds."""
    return {c.value for lst in lists for c in lst.conditions
            if c.kind == "token" and not c.negated}


def etag_matches(given: str, current: str | None) -> bool:
    """Weak comparison (``W/`` ignored), as RFC 4918 allows for the ``If`` header."""
    if current is None:
        return False
    return given.removeprefix("W/") == current.removeprefix("W/")
