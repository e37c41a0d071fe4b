"""The fuzzer behind tests/test_fuzz.py (CI: a fixed seed, a few thousand cases) and
scripts/fuzz.py (tens of thousands on demand): schemathesis generates requests from the OpenAPI
document (driveserver/api/openapi.json) and every answer is checked.

How it runs:
* **Real credentials.** :func:`prepare` makes two accounts and a small drive over HTTP (a
  folder shared with bob, files, an image, a trashed item, links with and without a password,
  an app password, a spare device and spare sessions) and returns the ids and secrets. Every
  case is sent with alice's bearer token, so the /api/ routes get past authentication; a path
  parameter is, half the time, one of the real ids of its kind (so the handlers get past their
  404s), a block route's ``?token=`` a real grant, a link route's token a real link's.
* **Deterministic.** Each operation is a Hypothesis test with ``@seed(seed)``, no example
  database and a fixed number of examples per generation mode (valid and invalid data), run in
  a fixed order: the same seed sends the same requests. A failure prints the seed, the operation
  and the request as curl, and ``scripts/fuzz.py --seed S --only OPERATION_ID`` sends it again.
* **What counts as a failure**: a 5xx (``not_a_server_error``), an error answer not in the JSON
  error shape of docs/api.md (``{"error": {"code", "message", ...}}``), and an answer the
  document does not describe (status code, content type, headers, body schema: schemathesis'
  conformance checks).
* **What is left out, with its reason**: requests that would end the fuzzer's own session
  (``POST /api/auth/logout`` gets a spare session's token instead; the fuzzer's own device is
  never a ``device_id``), and WebDAV (not in the document).

Synchronous on purpose (``requests``, which schemathesis drives): the test runs it in a worker
thread while the server's event loop serves it.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from requests.adapters import HTTPAdapter
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

PASSWORD = "correct horse battery"
FUZZER_DEVICE = "fuzzer"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
# Operations given a spare session's token instead of the fuzzer's: they end the session used.
SPENDS_SESSION = {"logout"}
# Operations that check passwords, which the server throttles (per address and account).
THROTTLED = {"login", "register", "changePassword"}
FUZZ_SOURCE = "127.0.0.2"


@dataclass
class Pools:
    """Real values the fuzzer substitutes for generated ones (by path parameter name)."""
    token: str
    spare_tokens: list[str]
    path_values: dict[str, list[str]]
    upload_grants: list[str]
    block_urls: list[tuple[str, str]]  # (hash, read grant)
    metrics_token: str | None = None


@dataclass
class Finding:
    seed: int
    operation: str
    status: int
    what: str
    curl: str

    def __str__(self) -> str:
        return (f"seed {self.seed}, {self.operation}: {self.status}: {self.what}\n"
                f"    {self.curl}")


@dataclass
class Report:
    seed: int
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    per_operation: Counter[str] = field(default_factory=Counter)
    per_operation_status: Counter[tuple[str, int]] = field(default_factory=Counter)
    server_errors: list[Finding] = field(default_factory=list)
    failures: list[Finding] = field(default_factory=list)
    seconds: float = 0.0
    scenarios: int = 0  # stateful chains (tests/fuzzing_links.py)
    flaky_suites: int = 0

    @property
    def count_5xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def summary(self) -> str:
        shown = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        chains = f", {self.scenarios} chains" if self.scenarios else ""
        return (f"seed {self.seed}: {self.cases} cases{chains} over {len(self.per_operation)} operations "
                f"in {self.seconds:.1f} s, {self.count_5xx} 5xx, {len(self.failures)} other "
                f"failures; statuses {shown}")


def _png() -> bytes:
    from PIL import Image
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 90)).save(out, "PNG")
    return out.getvalue()


class SourceAddressAdapter(HTTPAdapter):
    """Connections from another loopback address: the fuzzed requests come from 127.0.0.2,
    so the failed logins they make (throttled per address) never lock out the set-up's."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def fuzzing_session() -> requests.Session:
    http = requests.Session()
    http.mount("http://", SourceAddressAdapter(FUZZ_SOURCE))
    return http


def prepare(base_url: str, tag: str = "", metrics_token: str | None = None) -> Pools:
    """Two accounts (named with ``tag``, so each round has its own) and a small drive of
    everything the routes act on; see the module's docstring."""
    http = requests.Session()

    def call(method: str, path: str, token: str | None = None, expect: int = 200,
             **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = http.request(method, base_url + path, headers=headers, timeout=30, **kw)
        assert r.status_code == expect, (method, path, r.status_code, r.text[:300])
        return r.json() if r.content else None

    def login(email: str, device: str) -> dict[str, Any]:
        return call("POST", "/api/auth/login", json={"email": email, "password": PASSWORD,
                                                    "device_name": device})

    def upload(token: str, path: str, data: bytes) -> tuple[str, dict[str, Any]]:
        init = call("POST", "/api/files/upload-init", token,
                    json={"path": path, "size": len(data)})
        r = http.post(init["upload_url"], data=data, timeout=30)
        assert r.status_code == 200, r.text
        done = call("POST", f"/api/files/{init['file_id']}/complete", token,
                    json={"blocks": r.json()["blocks"]})
        return done["file_id"], init

    alice_email, bob_email = f"alice{tag}@example.com", f"bob{tag}@example.com"
    for email in (alice_email, bob_email):
        call("POST", "/api/auth/register", expect=201,
             json={"email": email, "password": PASSWORD})
    alice = login(alice_email, FUZZER_DEVICE)
    token = alice["token"]
    bob = login(bob_email, "bob-laptop")
    spare = [login(alice_email, f"spare-{i}")["token"] for i in range(3)]
    spare_device = login(alice_email, "spare-device")["device_id"]

    folder = call("POST", "/api/folders", token, expect=201, json={"path": "/Shared"})["file_id"]
    call("POST", "/api/folders", token, expect=201, json={"path": "/Docs/Deep/Er"})
    text_id, _ = upload(token, "/Docs/notes.txt", b"hello fuzzer\n" * 50)
    image_id, _ = upload(token, "/Shared/red.png", _png())
    _, _ = upload(token, "/Shared/in-share.txt", b"shared bytes")
    old_id, _ = upload(token, "/old.txt", b"to the trash")
    call("DELETE", f"/api/files/{old_id}", token, expect=204)
    # a second version, so restore/{version} has one to restore
    init = call("POST", "/api/files/upload-init", token,
                json={"file_id": text_id, "size": 5})
    r = http.post(init["upload_url"], data=b"v2 ok", timeout=30)
    call("POST", f"/api/files/{text_id}/complete", token, json={"blocks": r.json()["blocks"]})

    share = call("POST", f"/api/files/{folder}/share", token, expect=201,
                 json={"user_email": bob_email, "permission": "edit"})
    links = [call("POST", f"/api/files/{fid}/links", token, expect=201, json=body)
             for fid, body in [(folder, {}), (text_id, {}),
                               (folder, {"password": "link password 1"}),
                               (image_id, {"allow_download": False})]]
    app_password = call("POST", "/api/app-passwords", token, expect=201,
                        json={"name": "phone"})
    grant = call("POST", "/api/files/upload-init", token,
                 json={"path": "/grant.bin", "size": 1 << 20})["token"]
    dl = call("GET", f"/api/files/{text_id}/download", token)
    block_urls = []
    for b in dl["blocks"]:
        block_urls.append((b["hash"], b["url"].split("token=", 1)[1]))
    bob_folder = call("POST", "/api/folders", bob["token"], expect=201,
                      json={"path": "/bob-only"})["file_id"]
    return Pools(
        token=token, spare_tokens=spare,
        path_values={
            "file_id": [folder, text_id, image_id, old_id, bob_folder],
            "share_id": [share["share_id"]],
            "link_id": [link["link_id"] for link in links],
            "token": [link["url"].rsplit("/s/", 1)[1] for link in links],
            "device_id": [spare_device, bob["device_id"]],
            "app_password_id": [app_password["app_password_id"]],
        },
        upload_grants=[grant], block_urls=block_urls, metrics_token=metrics_token)


def error_shape_problem(response: Any) -> str | None:
    """Why an error answer is not in the API's JSON error shape, or None when it is."""
    if response.status_code < 400 or response.request.method == "HEAD":
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        return f"error body is not JSON: {response.content[:100]!r}"
    error = body.get("error") if isinstance(body, dict) else None
    if not (isinstance(error, dict) and isinstance(error.get("code"), str)
            and isinstance(error.get("message"), str)):
        return f"error body is not {{'error': {{'code', 'message'}}}}: {body!r:.200}"
    return None


def _personalise(case: Any, pools: Pools, draw: Callable[[Any], Any]) -> dict[str, str]:
    """Swap in real values (each choice drawn, so the seed decides); returns the headers."""
    op = case.operation
    for name in list(case.path_parameters or {}):
        values = pools.path_values.get(name)
        if values and draw(st.booleans()):
            case.path_parameters[name] = draw(st.sampled_from(values))
    if op.path.startswith("/blocks/"):
        if op.method.upper() == "GET" and pools.block_urls and draw(st.booleans()):
            block_hash, grant = draw(st.sampled_from(pools.block_urls))
            case.path_parameters["hash"] = block_hash
            case.query = {**(case.query or {}), "token": grant}
        elif op.method.upper() != "GET" and draw(st.booleans()):
            case.query = {**(case.query or {}), "token": draw(st.sampled_from(pools.upload_grants))}
    token = pools.token
    if op.path == "/metrics" and pools.metrics_token and draw(st.booleans()):
        token = pools.metrics_token
    if op.definition.raw.get("operationId") in SPENDS_SESSION:
        token = pools.spare_tokens.pop() if pools.spare_tokens else "revoked-already"
    return {"Authorization": f"Bearer {token}"}


def fuzz_operation(schema: Any, op: Any, pools: Pools, report: Report, *, examples: int,
                   seed_value: int, base_url: str, http: requests.Session) -> None:
    """``examples`` valid and ``examples`` invalid requests to one operation, each checked."""
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        try:
            _fuzz_mode(op, mode, pools, report, examples=examples, seed_value=seed_value,
                       base_url=base_url, http=http)
        except Unsatisfiable:  # no invalid request exists (no parameters, no body): none sent
            assert mode is GenerationMode.NEGATIVE, op.label


def _fuzz_mode(op: Any, mode: GenerationMode, pools: Pools, report: Report, *, examples: int,
               seed_value: int, base_url: str, http: requests.Session) -> None:
    op_id = op.definition.raw.get("operationId") or op.label
    label = f"{op_id} ({mode.value})"

    @seed(seed_value)
    @settings(max_examples=examples, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False)
    @given(case=op.as_strategy(generation_mode=mode), data=st.data())
    def one(case: Any, data: Any) -> None:
        headers = _personalise(case, pools, data.draw)
        response = case.call(base_url=base_url, session=http, headers=headers, timeout=60)
        report.cases += 1
        report.per_operation[op_id] += 1
        report.statuses[response.status_code] += 1
        report.per_operation_status[op_id, response.status_code] += 1
        problems: list[str] = []
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except AssertionError as exc:  # one schemathesis Failure
            problems.append(_first_line(exc))
        except BaseExceptionGroup as group:  # a FailureGroup: several
            problems += [_first_line(e) for e in group.exceptions]
        shape = error_shape_problem(response)
        if shape:
            problems.append(shape)
        if response.status_code >= 500 and not problems:  # not_a_server_error says it too
            problems.append("server error")
        body = response.content[:200].decode("utf-8", "replace").replace("\n", " ")
        for what in problems:
            finding = Finding(seed_value, label, response.status_code, f"{what} | body: {body}",
                              case.as_curl_command(headers=headers))
            (report.server_errors if response.status_code >= 500 else
             report.failures).append(finding)

    one()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_schema(base_url: str, http: requests.Session) -> Any:
    """The document as the server serves it (``GET /api/openapi.json``)."""
    r = http.get(base_url + "/api/openapi.json", timeout=30)
    r.raise_for_status()
    return schemathesis.openapi.from_dict(r.json())


def run_order(op: Any) -> tuple[int, str, str]:
    """Reads first, then writes, then deletions, then the password checks: a round's deletions
    (trash, purge, revoke) must not leave the reads and writes nothing real to act on, and
    the throttles the password checks trip must not refuse the rest."""
    op_id = op.definition.raw.get("operationId")
    method = op.method.upper()
    rank = (3 if op_id in THROTTLED else 2 if method == "DELETE" or op_id in SPENDS_SESSION
            else 0 if method == "GET" else 1)
    return rank, op.path, method


def run(base_url: str, *, examples: int, seed_value: int, only: Iterable[str] = (),
        pools: Pools | None = None, progress: Callable[[str], None] | None = None,
        document: dict[str, Any] | None = None, metrics_token: str | None = None,
        shard: tuple[int, int] = (0, 1)) -> Report:
    """Fuzz every operation of the served document (or those named in ``only``) with a drive
    of its own (``pools``, made now unless given); a test may hand in another ``document`` to
    show that the checks fail where they should. ``shard`` (k, n) takes every n-th operation
    from the k-th, for :func:`run_parallel`."""
    pools = pools or prepare(base_url, f"-{seed_value}", metrics_token)
    http = fuzzing_session()
    schema = (schemathesis.openapi.from_dict(document) if document is not None
              else load_schema(base_url, http))
    wanted = set(only)
    report = Report(seed_value)
    started = time.monotonic()
    operations = sorted((result.ok() for result in schema.get_all_operations()), key=run_order)
    for op in operations[shard[0]::shard[1]]:
        op_id = op.definition.raw.get("operationId")
        if wanted and op_id not in wanted:
            continue
        before = report.cases
        fuzz_operation(schema, op, pools, report, examples=examples, seed_value=seed_value,
                       base_url=base_url, http=http)
        if progress:
            progress(f"{op_id}: {report.cases - before} cases, {report.count_5xx} 5xx so far")
    report.seconds = time.monotonic() - started
    return report


def merge(reports: list[Report]) -> Report:
    out = Report(reports[0].seed)
    for r in reports:
        out.cases += r.cases
        out.statuses.update(r.statuses)
        out.per_operation.update(r.per_operation)
        out.per_operation_status.update(r.per_operation_status)
        out.server_errors += r.server_errors
        out.failures += r.failures
        out.seconds = max(out.seconds, r.seconds)
    return out


def _run_shard(base_url: str, examples: int, seed_value: int, pools: Pools,
               shard: tuple[int, int]) -> Report:
    return run(base_url, examples=examples, seed_value=seed_value, pools=pools, shard=shard)


def run_parallel(base_url: str, *, examples: int, seed_value: int, workers: int,
                 metrics_token: str | None = None) -> Report:
    """:func:`run` split over ``workers`` processes (Hypothesis' generation is most of a
    case's cost, and one process has one core's worth of it). Each operation's requests are
    still exactly those of its seed; only how two shards' requests interleave on the server
    varies, so a finding is replayed with one worker (``scripts/fuzz.py --only``)."""
    pools = prepare(base_url, f"-{seed_value}", metrics_token)
    if workers <= 1:
        return run(base_url, examples=examples, seed_value=seed_value, pools=pools)
    context = multiprocessing.get_context("spawn")  # never fork a process with an event loop
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = [pool.submit(_run_shard, base_url, examples, seed_value, pools, (k, workers))
                   for k in range(workers)]
        return merge([f.result() for f in futures])
