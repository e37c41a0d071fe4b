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
