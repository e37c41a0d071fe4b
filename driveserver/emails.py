"""Email addresses as account names: the form they are kept in, and look-alikes refused.

An address is how one person finds another to share a folder with, so two accounts whose
addresses look the same on screen would let the second one receive what was meant for the
first. Three layers keep that from happening:

- **NFKC** (:func:`normal_email`): compatibility characters are the letters they imitate, so
  ``\ufb01nance@`` (the ligature U+FB01) *is* ``finance@``, already taken if that one is.
- **Nothing invisible**: format and control characters (zero-width space, soft hyphen, word
  joiner, direction marks) are refused, since ``alice\u200b@`` shows as ``alice@``.
- **No mixed-script labels** (:func:`check_address`): a local part or a domain label that mixes
  scripts with characters confusable across them (a Cyrillic ``і`` among Latin letters) is
  refused. A label wholly in one script is fine (``иван@пример.рф``), as is a Cyrillic local
  part on a Latin domain.
- **One account per skeleton** (:func:`skeleton`): whole-script look-alikes (``аре@`` written
  in Cyrillic against ``ape@`` in Latin) pass the check above, so a new address whose
  skeleton (each character replaced by the smallest member of its confusable class, after
  case folding) equals an existing account's is refused as taken.

The confusable classes are Unicode's (UTS #39 ``confusables.txt``) as shipped by the
``confusable-homoglyphs`` package, loaded on first use (about 1 MB of JSON) so that starting
the server costs nothing for it.
"""

from __future__ import annotations

import functools
import unicodedata

from driveproto.names import name_key

from .errors import BadRequest


def normal_email(email: str) -> str:
    """The form an address is kept and shown in (NFKC, surrounding spaces dropped)."""
    return unicodedata.normalize("NFKC", email.strip())


def email_key(email: str) -> str:
    """What two addresses must differ in to be two accounts: NFKC, then case-folded."""
    return name_key(normal_email(email))


@functools.cache
def _prototypes() -> dict[str, str]:
    # The package ships no type information (no py.typed); its data is a plain dict.
    from confusable_homoglyphs.confusables import confusables_data  # type: ignore[import-untyped]

    # The data lists, per character, what it may be confused with, but not always both ways
    # round ("I" lists only "l", while "l" lists "1" and "I"): join them into classes
    # (union-find) and take each class's smallest member. Single characters only (a sequence
    # such as "rn" for "m" cannot be a one-to-one replacement).
    parent: dict[str, str] = {}

    def find(c: str) -> str:
        while parent.setdefault(c, c) != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    for char, glyphs in confusables_data.items():
        for g in glyphs:
            if len(g["c"]) == 1:
                a, b = find(char), find(g["c"])
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return {c: find(c) for c in list(parent)}


def skeleton(email: str) -> str:
    """The address as it looks: equal skeletons mean two addresses a reader cannot tell apart."""
    prototypes = _prototypes()
    # Mapped before case folding as well as after: a capital I looks like l ("paypaI"), which
    # folding alone would turn into an i, and folding can land in a class again.
    mapped = "".join(prototypes.get(c, c) for c in normal_email(email))
    return name_key("".join(prototypes.get(c, c) for c in name_key(mapped)))


def check_address(email: str) -> str:
    """``email`` in its kept form, or a 400 ``confusable_email`` if a part of it mixes scripts
    in a way that imitates another address."""
    from confusable_homoglyphs.confusables import is_dangerous

    address = normal_email(email)
    hidden = sorted({f"U+{ord(c):04X}" for c in address
                     if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")})
    if hidden:  # zero-width spaces, soft hyphens, joiners, direction marks: invisible on screen
        raise BadRequest(f"the address has invisible characters ({', '.join(hidden)})",
                         code="confusable_email", field="email")
    local, _, domain = address.rpartition("@")
    for label in [local, *domain.split(".")]:
        if label and is_dangerous(label):
            raise BadRequest(
                f"the address {address!r} mixes letters of different scripts that look alike "
                f"(in {label!r}); use one script per part of the address",
                code="confusable_email", field="email")
    return address
