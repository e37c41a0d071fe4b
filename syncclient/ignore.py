"""Which paths in the folder are never synced.

Two sets of rules, both applied to every scanned path and every watcher event:

* **Built in, always.** The engine's own ``.drive-sync`` marker folder, the hidden temp files
  downloads are assembled in (:data:`TEMP_PREFIX`), editors' lock and swap files, OS litter and
  partial ``*.tmp`` files (:data:`BUILTIN`, matched against each name of a path). No pattern of
  the user's can bring them back.
* **The folder's** ``.drivesyncignore`` (in its root), in gitignore syntax, as users of
  Syncthing's ``.stignore`` and Maestral's ``.mignore`` expect: ``build/`` (folders only),
  ``**/node_modules``, ``/x`` (anchored at the root), ``!keep.log`` (re-included), ``#``
  comments, ``\\#`` and ``\\!`` for a literal first character, trailing spaces dropped unless
  escaped (``\\ ``). Invalid lines are skipped, as git skips them (:attr:`Ignore.invalid`).

`pathspec <https://pypi.org/project/pathspec/>`_ parses and compiles each pattern. Its regex
matches a path *and everything below it*; which pattern decides a path is settled here the way
git does it (``dir.c``: ``last_matching_pattern``, ``treat_directory``): walking from the root
down, the last pattern that matches a path itself decides it, and a path inside an ignored
folder is ignored whatever a later ``!`` says, because git never looks inside that folder.
(pathspec's ``GitIgnoreSpec.match_file`` re-includes ``build/keep.txt`` under ``build/`` +
``!build/keep.txt``; git, and this module, do not.)
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import stat
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pathspec import GitIgnoreSpec

from .config import MARKER

log = logging.getLogger(__name__)

TEMP_PREFIX = ".~drive-sync-"
"""Downloads are written to ``.~drive-sync-<random>.tmp`` next to their target."""

BUILTIN = ("~$*", ".~lock*", "*.swp", "*.swo", ".DS_Store", "Thumbs.db", "*.tmp",
           TEMP_PREFIX + "*", "desktop.ini")
IGNORE_FILE = ".drivesyncignore"

# One regular expression for all built-in names: checked for each name of every path.
_BUILTIN_NAME = re.compile("|".join(fnmatch.translate(p) for p in BUILTIN))
_FOLDER_CACHE_MAX = 65_536  # folder verdicts kept (a few MB at most); then it starts over

# pathspec's regex shapes (pathspec.patterns.gitignore.spec), see _rule.
_DIR_MARK = "(?P<ps_d>/)"
_ANY = "."           # "*", "**", "**/*": every path
_ANY_DIR = _DIR_MARK  # "*/", "**/": every folder
_BELOW_TOP = "/"     # "*/**", "**/*/**": every path below a top-level folder


@dataclass(frozen=True, slots=True)
class _Rule:
    ignores: bool     # False for a "!" pattern, which re-includes
    dir_only: bool    # matches folders only ("build/")
    matches: Callable[[str], bool]  # the path itself (relative, no leading slash) matches


def _rule(pattern_line: str, regex: re.Pattern[str], ignores: bool) -> _Rule:
    """The rule of one compiled pattern: which paths it matches *themselves*.

    pathspec's regex for a pattern ends in ``(?:(?P<ps_d>/)|$)`` (the path, or a folder above
    it, matches), or in ``(?P<ps_d>/)`` for a folder pattern (queried as ``path/``), or in ``/``
    for a pattern ending in ``/**`` (everything below); a few patterns get a fixed regex. Git
    asks whether the pattern matches the path itself, which ``fullmatch`` answers for the first
    two shapes."""
    src = regex.pattern
    body = pattern_line.removeprefix("!").rstrip()
    if src == _ANY:
        return _Rule(ignores, False, lambda p: True)
    if src == _ANY_DIR:
        return _Rule(ignores, True, lambda p: True)
    if src == _BELOW_TOP:
        return _Rule(ignores, False, lambda p: "/" in p)
    if src.endswith(_DIR_MARK):
        if body.endswith("/**/"):  # folders below a match, not the match itself
            return _Rule(ignores, True, lambda p: regex.search(p) is not None)
        return _Rule(ignores, True, lambda p: regex.fullmatch(p + "/") is not None)
    if src.endswith("/"):  # "x/**": everything below x
        return _Rule(ignores, False, lambda p: regex.search(p) is not None)
    return _Rule(ignores, False, lambda p: regex.fullmatch(p) is not None)


def _trim_trailing_spaces(line: str) -> str:
    """Git's rule (``dir.c``: ``trim_trailing_spaces``): trailing spaces go unless the first of
    them is escaped with a backslash. (pathspec keeps ``sp\\ `` but loses it once another
    space follows.)"""
    last_space = None
    i = 0
    while i < len(line):
        c = line[i]
        if c == " ":
            if last_space is None:
                last_space = i
        elif c == "\\":
            i += 1
            if i == len(line):
                return line
            last_space = None
        else:
            last_space = None
        i += 1
    return line if last_space is None else line[:last_space]


class _Rules:
    """The user's patterns, compiled (last first), and the verdicts on folders seen so far."""

    def __init__(self, text: str) -> None:
        self.rules: list[_Rule] = []
        self.invalid: list[tuple[int, str]] = []  # (line number, line) that git would skip
        for number, line in enumerate(text.removeprefix("\ufeff").splitlines(), 1):
            # Names are compared in NFC (the scan's form), so a pattern typed in NFD matches.
            line = _trim_trailing_spaces(unicodedata.normalize("NFC", line))
            if line.removeprefix("!") == "/":
                continue  # matches nothing in git; pathspec reads "!/" as every folder
            try:
                patterns = GitIgnoreSpec.from_lines([line]).patterns
            except ValueError:  # pathspec's GitIgnorePatternError
                self.invalid.append((number, line))
                continue
            for p in patterns:
                if p.include is not None and p.regex is not None:
                    self.rules.append(_rule(line, p.regex, p.include))
        self.rules.reverse()
        self.folders: dict[str, bool] = {}

    def decide(self, rel: str, is_dir: bool | None, start: int = 0) -> bool | None:
        """Does the last pattern matching ``rel`` itself ignore it (parents aside)? None when
        that depends on whether it is a folder and ``is_dir`` does not say."""
        rules = self.rules
        for i in range(start, len(rules)):
            r = rules[i]
            if r.dir_only:
                if is_dir is False or not r.matches(rel):
                    continue
                if is_dir:
                    return r.ignores
                # Unknown: as a folder this rule decides it; as a file the ones before it do.
                as_file = self.decide(rel, False, i + 1)
                return r.ignores if as_file == r.ignores else None
            if r.matches(rel):
                return r.ignores
        return False

    def folder_ignored(self, folder: str) -> bool:
        """Is the folder ``a/b`` ignored, or inside an ignored folder? Asked for the parent of
        every path, so the answers are kept: a scan asks the same folders over and over."""
        cache = self.folders
        hit = cache.get(folder)
        if hit is not None:
            return hit
        chain = [folder]
        ignored = False
        up = folder.rpartition("/")[0]
        while up:  # the nearest folder above with a verdict
            hit = cache.get(up)
            if hit is not None:
                ignored = hit
                break
            chain.append(up)
            up = up.rpartition("/")[0]
        if len(cache) + len(chain) > _FOLDER_CACHE_MAX:
            cache.clear()
        for f in reversed(chain):
            if not ignored:
                name = f.rpartition("/")[2]
                ignored = f == MARKER or _BUILTIN_NAME.match(name) is not None \
                    or self.decide(f, True) is True
            cache[f] = ignored
        return ignored


class Ignore:
    """``ignore("/a/b.txt")``: is that path (relative to the root, leading slash) ignored, or
    inside an ignored folder?

    Built from the root's ``.drivesyncignore`` when created; the daemon's watcher keeps one for
    its whole run, so a query about the ignore file itself (its own watcher event, or the scan
    passing it) reloads the patterns when the file changed.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._file = root / IGNORE_FILE
        self._signature: tuple[int, int, int] | None = None
        self._rules = self._load()

    @property
    def invalid(self) -> list[tuple[int, str]]:
        """The lines of the ignore file that are not valid patterns (skipped), with numbers."""
        return list(self._rules.invalid)

    def _load(self) -> _Rules:
        try:
            st = os.stat(self._file)
            self._signature = (st.st_mtime_ns, st.st_size, st.st_ino)
            text = self._file.read_text(encoding="utf-8", errors="replace")
        except OSError:  # none (or not a readable file): the built-in rules only
            self._signature = None
            text = ""
        return _Rules(text)

    def _reload_if_changed(self) -> None:
        try:
            st = os.stat(self._file)
            now: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            now = None
        if now != self._signature:
            self._rules = self._load()
            log.debug("reloaded %s", self._file)

    def __call__(self, rel_path: str, *, is_dir: bool | None = None) -> bool:
        """``is_dir``: whether the path is a folder, when the caller knows (the scan, the
        trees, the watcher's event). A pattern such as ``build/`` matches folders only; when
        that decides and ``is_dir`` is not given, the item on disk decides, and a path that is
        not there is taken as ignored, i.e. left alone on both sides (never deleted nor sent)."""
        rel = rel_path.strip("/")
        if rel == IGNORE_FILE:
            self._reload_if_changed()
        rules = self._rules
        parent, _, name = rel.rpartition("/")
        if not name:
            return False  # the root
        if parent:
            if rules.folder_ignored(parent):
                return True
        elif name == MARKER:
            return True
        if _BUILTIN_NAME.match(name):
            return True
        if not rules.rules:
            return False
        verdict = rules.decide(rel, is_dir)
        if verdict is None:
            try:
                verdict = rules.decide(rel, stat.S_ISDIR(os.lstat(self.root / rel).st_mode))
            except OSError:
                verdict = True
        return bool(verdict)


LITTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


def is_litter(name: str) -> bool:
    """Ignored names nobody can miss: our own download temp files and the system's folder
    metadata. Unlike editors' swap and lock files (which may hold unsaved work), these may go
    with a folder deleted elsewhere."""
    return name.startswith(TEMP_PREFIX) or name in LITTER


def ignored_paths(root: Path, ignore: Ignore | None = None) -> Iterator[str]:
    """What is ignored in the folder (blocking: run it in a thread), top down in name order:
    paths relative to the root as spelled on disk, a folder once with a trailing ``/`` and not
    what is inside it. The engine's own ``.drive-sync`` folder is left out. Symlinks are never
    followed; folders that cannot be listed are passed over."""
    rules = ignore or Ignore(root)

    def walk(os_dir: str, tree_dir: str, shown_dir: str) -> Iterator[str]:
        try:
            entries = sorted(os.scandir(os_dir), key=lambda e: e.name)
        except OSError:
            return
        for e in entries:
            tree_path = f"{tree_dir}/{unicodedata.normalize('NFC', e.name)}"
            is_dir = e.is_dir(follow_symlinks=False)
            if rules(tree_path, is_dir=is_dir):
                if tree_path != f"/{MARKER}":
                    yield shown_dir + e.name + ("/" if is_dir else "")
            elif is_dir:
                yield from walk(e.path, tree_path, f"{shown_dir}{e.name}/")

    yield from walk(str(root), "", "")
