"""The OpenAPI document (driveserver/api/openapi.json) is valid OpenAPI 3.1, describes exactly the
routes the app serves with the same methods, is served at ``GET /api/openapi.json`` without a
session, and ships in the package.

Left out of the comparison, each for a reason:
* ``HEAD``: aiohttp answers HEAD beside every GET; the document says so once (info.description)
  instead of doubling every operation.
* ``/dav`` and ``/dav/{tail}``: WebDAV's methods (PROPFIND, MKCOL, LOCK...) are not HTTP methods
  OpenAPI can name; docs/api.md and docs/webdav.md describe them.
"""

from __future__ import annotations

import json
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import jsonschema_rs
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

from driveserver.api.openapi import DOCUMENT_PATH, ROUTE, load_document
from driveserver.app import build_app
from driveserver.config import load_config
from tests.helpers import RunningServer

ROOT = Path(__file__).resolve().parents[1]
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
EXCLUDED_PREFIXES = ("/dav",)  # WebDAV: see the module docstring


def served_routes(tmp_path: Path) -> set[tuple[str, str]]:
    """(method, path template) of every route an app with every optional route on serves."""
    config = load_config(None, env={}, overrides={"data_dir": tmp_path, "port": 0,
                                                  "metrics_token": "m" * 20})
    app = build_app(config)
    out = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        assert path, route
        if route.method == "HEAD" or path.startswith(EXCLUDED_PREFIXES):
            continue
        out.add((route.method.lower(), path))
    return out


def documented_routes(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, item in doc["paths"].items()
            for method in item if method in METHODS}


def test_the_document_is_valid_openapi_3_1() -> None:
    """Checked against the OpenAPI 3.1 schema that schemathesis ships, and every embedded
    schema against JSON Schema 2020-12 (the 3.1 dialect), which the first check leaves open."""
    doc = load_document()
    assert doc["openapi"] == "3.1.0"
    errors = [f"{list(e.instance_path)}: {e.message}" for e in OPENAPI_31_VALIDATOR.iter_errors(doc)]
    assert errors == []
    for name, schema in doc["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name


def test_a_broken_document_is_refused_by_the_validator() -> None:
    """The validity check can fail: a response without its description, an unknown field."""
    doc = load_document()
    doc["paths"]["/healthz"]["get"]["responses"]["200"].pop("description")
    doc["paths"]["/healthz"]["get"]["bogus"] = 1
    assert len(list(OPENAPI_31_VALIDATOR.iter_errors(doc))) >= 1


def test_every_route_is_documented_and_every_documented_route_exists(tmp_path: Path) -> None:
    doc = load_document()
    served, documented = served_routes(tmp_path), documented_routes(doc)
    assert ("get", "/api/files/{file_id}/content") in served  # the comparison sees real routes
    assert sorted(served - documented) == [], "served but not in the document"
    assert sorted(documented - served) == [], "in the document but not served"


def test_operations_are_unique_and_every_reference_resolves() -> None:
    """operationIds are unique (links name them), every link names an operation and a
    parameter it has, every ``$ref`` points into the document, every path parameter of a
    template is declared."""
    doc = load_document()
    ops = {o["operationId"]: (path, o) for path, item in doc["paths"].items()
           for m, o in item.items() if m in METHODS}
    assert len(ops) == len(documented_routes(doc))
    for path, item in doc["paths"].items():
        for method, o in item.items():
            names = {p["name"] for p in o.get("parameters", []) if p["in"] == "path"}
            templated = {part[1:-1] for part in path.split("/") if part.startswith("{")}
            assert names == templated, (method, path)
            for resp in o["responses"].values():
                for link in resp.get("links", {}).values():
                    target_path, target = ops[link["operationId"]]
                    params = {p["name"] for p in target.get("parameters", [])}
                    assert set(link["parameters"]) <= params, (path, link)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                section, kind, name = node["$ref"].removeprefix("#/").split("/")
                assert name in doc[section][kind], node["$ref"]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(doc)


def test_every_error_answer_is_the_error_shape() -> None:
    """Every documented 4xx/5xx answer with a body is the one JSON error shape of docs/api.md."""
    doc = load_document()
    responses = doc["components"]["responses"]
    for path, item in doc["paths"].items():
        for method, o in item.items():
            for status, resp in o["responses"].items():
                if status[0] not in "45":
                    continue
                resp = responses[resp["$ref"].rsplit("/", 1)[1]] if "$ref" in resp else resp
                schema = resp["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)


def test_block_and_link_routes_name_their_own_credentials() -> None:
    """Block routes take ``?token=`` grants, link routes the token in their path (and an
    access token for a password link), the rest a session: the document says which."""
    doc = load_document()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["blockGrant"] == {**schemes["blockGrant"], "in": "query", "name": "token"}
    for path, item in doc["paths"].items():
        for o in (o for m, o in item.items() if m in METHODS):
            security = o.get("security", doc["security"])
            if path.startswith("/blocks/"):
                assert security == [{"blockGrant": []}], path
            elif path.startswith("/s/") and path != "/s/{token}/unlock":
                assert {} in security and {"linkAccess": []} in security, path
            elif path.startswith("/api/") and path not in {"/api/auth/register",
                                                           "/api/auth/login", ROUTE}:
                assert security == [{"bearer": []}, {"cookie": []}], path


async def test_the_document_is_served_without_a_session(server: RunningServer) -> None:
    r = await server.anonymous().get(ROUTE)
    assert r.status == 200, r
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.body == json.loads(DOCUMENT_PATH.read_text())
    again = await server.anonymous().get(ROUTE, headers={"If-None-Match": r.headers["ETag"]})
    assert again.status == 304


def test_the_document_is_package_data() -> None:
    """``pip install .`` ships it (pyproject's package-data names it)."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["package-data"]["driveserver"]
    relative = DOCUMENT_PATH.relative_to(ROOT / "driveserver").as_posix()
    assert any(fnmatch(relative, p) for p in patterns), relative
