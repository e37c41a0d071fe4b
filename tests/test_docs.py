"""The docs stay true: every route the app serves is described in docs/api.md."""

from __future__ import annotations

import re
from pathlib import Path

from driveserver.app import build_app
from driveserver.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def test_every_route_is_documented(tmp_path: Path) -> None:
    app = build_app(load_config(None, env={}, overrides={"data_dir": tmp_path}))
    doc = (ROOT / "docs" / "api.md").read_text()
    documented = {(m, re.sub(r"\{[^}]+\}", "{}", p))
                  for m, p in re.findall(r"### `(GET|POST|PUT|PATCH|DELETE) (/[^ ?`]*)", doc)}
    missing = []
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        path = re.sub(r"\{[^}]+\}", "{}", route.resource.canonical)  # type: ignore[union-attr]
        if (route.method, path) not in documented:
            missing.append(f"{route.method} {path}")
    assert not missing, f"routes missing from docs/api.md: {missing}"


def _sh_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def test_readme_walkthrough_is_the_tested_one() -> None:
    """The README's first five minutes are the commands tests/test_quickstart.py runs."""
    readme = (ROOT / "README.md").read_text()
    tested = _sh_blocks((ROOT / "docs" / "first-five-minutes.md").read_text())[0]
    section = readme.split("## Your first five minutes", 1)[1].split("\n## ", 1)[0]
    assert _sh_blocks(section) == [tested]


def test_readme_commands_match_ci() -> None:
    """The README's two commands: the test one is exactly what .ci/run runs, and its server
    smoke step runs the server one (with ``exec`` before the server, so it can be stopped)."""
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    start = _sh_blocks(readme.split("## Quick start", 1)[1])
    server_command = start[0].strip()
    assert server_command == ("python3 -m venv .venv && .venv/bin/pip install -q -e '.[server]'"
                              " && .venv/bin/drive-server serve")
    test_command = start[1].strip()
    assert test_command in ci.splitlines()
    smoke = server_command.replace(" && .venv/bin/drive-server", " && exec .venv/bin/drive-server")
    assert f'bash -c "{smoke}"' in ci
