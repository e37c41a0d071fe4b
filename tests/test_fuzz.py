"""Schemathesis against a real server on a real port, from the served OpenAPI document
(tests/fuzzing.py says how): a fixed seed and about 2,000 requests, valid and invalid, to every
operation, with alice's bearer token and real ids. None may get a 5xx, an error outside the
JSON error shape, or an answer the document does not describe. At volume:
``python scripts/fuzz.py`` (README, Reliability).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from driveserver.api.openapi import DOCUMENT_PATH
from tests import fuzzing, fuzzing_links
from tests.helpers import METRICS_TOKEN, start_server

SEED = 17
EXAMPLES = 19  # per operation and mode: 61 operations (a few have fewer cases), > 2,000 requests
WORKERS = 2  # fuzzing processes: generating the cases is most of the cost


async def test_fuzzing_every_operation_finds_no_5xx_and_no_undocumented_answer(
        tmp_path: Path, database: dict[str, Any]) -> None:
    server = await start_server(tmp_path, **database, longpoll_default_seconds=0.2,
                                longpoll_max_seconds=0.5)
    try:
        report = await asyncio.to_thread(fuzzing.run_parallel, server.url, examples=EXAMPLES,
                                         seed_value=SEED, workers=WORKERS,
                                         metrics_token=METRICS_TOKEN)
        findings = "\n".join(str(f) for f in report.server_errors + report.failures)
        print(report.summary())
        assert report.server_errors == [] and report.count_5xx == 0, findings
        assert report.failures == [], findings
        assert report.cases >= 2000, report.summary()
        documented = {o["operationId"] for item in json.loads(DOCUMENT_PATH.read_text())[
            "paths"].values() for o in item.values()}
        assert set(report.per_operation) == documented  # every operation was fuzzed
        # Meaningful, not a wall of 401s and 404s: the real credentials and ids got through.
        assert sum(n for s, n in report.statuses.items() if s < 300) >= report.cases // 5
        # the server still works normally afterwards
        pools = await asyncio.to_thread(fuzzing.prepare, server.url, "-after")
        assert pools.token
    finally:
        await server.stop()


async def test_linked_operations_fuzzed_in_chains_find_nothing(tmp_path: Path,
        database: dict[str, Any]) -> None:
    """The stateful part: chains along the document's links (tests/fuzzing_links.py)."""
    server = await start_server(tmp_path, **database, longpoll_default_seconds=0.2,
                                longpoll_max_seconds=0.5)
    try:
        pools = await asyncio.to_thread(fuzzing.prepare, server.url, "-chains")
        report = await asyncio.to_thread(fuzzing_links.run_stateful, server.url, pools,
                                         scenarios=20, steps=8, seed_value=SEED)
    finally:
        await server.stop()
    print(report.summary())
    findings = "\n".join(str(f) for f in report.server_errors + report.failures)
    assert report.count_5xx == 0 and report.server_errors == [] and report.failures == [], findings
    assert report.cases >= 80
    # chains went through: things were made from one answer and acted on in the next
    made = sum(n for (op, status), n in report.per_operation_status.items() if status == 201)
    assert made >= 3, report.per_operation_status
    assert sum(n for s, n in report.statuses.items() if s == 401) < report.cases // 10


async def test_the_checks_fail_on_an_answer_the_document_does_not_describe(
        tmp_path: Path, database: dict[str, Any]) -> None:
    """The harness can fail: with a document that claims a field the quota answer lacks and
    no 4xx for listings, the same fuzzer reports both."""
    doc = json.loads(DOCUMENT_PATH.read_text())
    quota = doc["paths"]["/api/quota"]["get"]["responses"]["200"]
    quota["content"]["application/json"]["schema"]["required"].append("nonexistent")
    for status in ("400", "4XX"):
        doc["paths"]["/api/files"]["get"]["responses"].pop(status)
    server = await start_server(tmp_path, **database)
    try:
        report = await asyncio.to_thread(fuzzing.run, server.url, examples=5, seed_value=SEED,
                                         only=["quota", "listFolder"], document=doc)
    finally:
        await server.stop()
    failed = {f.operation.split()[0] for f in report.failures}
    assert failed == {"quota", "listFolder"}, report.failures
    assert report.server_errors == []


def test_the_error_shape_check_refuses_other_bodies() -> None:
    class Answer:
        def __init__(self, status: int, content: bytes, method: str = "GET") -> None:
            self.status_code, self.content = status, content
            self.request = type("Req", (), {"method": method})()

    assert fuzzing.error_shape_problem(Answer(404, b'{"error": {"code": "x", "message": "m"}}')) is None
    assert fuzzing.error_shape_problem(Answer(200, b"anything")) is None
    assert fuzzing.error_shape_problem(Answer(404, b"", method="HEAD")) is None
    assert fuzzing.error_shape_problem(Answer(400, b"<html>"))
    assert fuzzing.error_shape_problem(Answer(400, b'{"error": "x"}'))
    assert fuzzing.error_shape_problem(Answer(500, b'{"error": {"code": 1, "message": "m"}}'))
