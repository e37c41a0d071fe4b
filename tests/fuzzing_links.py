"""Stateful fuzzing along the OpenAPI document's links (tests/fuzzing.py does one request at a
time): schemathesis' state machine chains operations, feeding an answer's ids into the next
request (``createFolder`` → ``moveFile``/``shareFolder``/``createLink`` → ``changePermission``/
``endShare``/``revokeLink``, ``uploadInit`` → ``complete``, ``createAppPassword`` →
``revokeAppPassword``), with the same credentials and the same checks, counted rather than
raised so that one run reports every finding. schemathesis also infers links of its own (an
id in one answer that another operation takes, e.g. ``listDevices`` → ``removeDevice``).
``logout`` and ``removeDevice`` are left out: a chain that ends the fuzzer's session (or
removes its device, whose id ``listDevices`` hands over) would leave the rest of the run
nothing but 401s; tests/fuzzing.py fuzzes both, with ids that spare the session.

Seeded (``hypothesis.seed`` on the machine), no example database: the same seed makes the same
chains.
"""

from __future__ import annotations

import time
from typing import Any

import hypothesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import Flaky

from tests.fuzzing import (
    CHECKS,
    Finding,
    Pools,
    Report,
    _first_line,
    error_shape_problem,
    fuzzing_session,
    load_schema,
)

LEFT_OUT = ("logout", "removeDevice")
MAX_SUITES = 50


def run_stateful(base_url: str, pools: Pools, *, scenarios: int, steps: int,
                 seed_value: int) -> Report:
    """``scenarios`` chains of at most ``steps`` linked calls each."""
    http = fuzzing_session()
    schema = load_schema(base_url, http)
    for op_id in LEFT_OUT:
        schema = schema.exclude(operation_id=op_id)
    report = Report(seed_value)
    headers = {"Authorization": f"Bearer {pools.token}"}

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": base_url, "session": http, "headers": headers, "timeout": 60}

        def validate_response(self, response: Any, case: Any,
                              additional_checks: Any = None, **kwargs: Any) -> None:
            op_id = case.operation.definition.raw.get("operationId")
            report.cases += 1
            report.per_operation[op_id] += 1
            report.statuses[response.status_code] += 1
            report.per_operation_status[op_id, response.status_code] += 1
            problems: list[str] = []
            try:
                case.validate_response(response, checks=CHECKS, headers=headers)
            except AssertionError as exc:
                problems.append(_first_line(exc))
            except BaseExceptionGroup as group:
                problems += [_first_line(e) for e in group.exceptions]
            shape = error_shape_problem(response)
            if shape:
                problems.append(shape)
            if response.status_code >= 500 and not problems:
                problems.append("server error")
            body = response.content[:200].decode("utf-8", "replace").replace("\n", " ")
            for what in problems:
                finding = Finding(seed_value, f"{op_id} (stateful)", response.status_code,
                                  f"{what} | body: {body}", case.as_curl_command(headers=headers))
                (report.server_errors if response.status_code >= 500 else
                 report.failures).append(finding)

        def teardown(self) -> None:
            done.append(1)
            super().teardown()

    done: list[int] = []
    started = time.monotonic()
    # The chains' values come from the server's answers, so Hypothesis may find a replayed
    # prefix drawing differently (Flaky): as schemathesis' own runner does, that ends a suite,
    # not the run; the next suite's seed follows from the first, so the run stays reproducible.
    for suite in range(MAX_SUITES):
        left = scenarios - len(done)
        if left <= 0:
            break
        hypothesis.seed(seed_value + suite * 7919)(Machine)
        try:
            Machine.run(settings=settings(max_examples=left, stateful_step_count=steps,
                                          database=None, deadline=None, phases=[Phase.generate],
                                          suppress_health_check=list(HealthCheck),
                                          report_multiple_bugs=False))
        except Flaky:
            report.flaky_suites += 1
    report.scenarios = len(done)
    report.seconds = time.monotonic() - started
    return report
