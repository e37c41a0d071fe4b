"""Without Chromium the browser tests say so: skipped on a developer's machine, with what to
install, and failed under CI (tests/needs.py), never a green run that drove no browser."""

from __future__ import annotations

import asyncio
import os
import sys

from tests.browser import ROOT


async def run_one_browser_test(ci: str) -> tuple[int, str]:
    env = {**os.environ, "DRIVE_TEST_CHROMIUM": "/nonexistent/chromium", "CI": ci}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "tests/test_web_app.py::test_sign_in_and_out_with_the_form", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode()


async def test_a_missing_chromium_fails_under_ci_and_skips_elsewhere() -> None:
    (failed, ci_out), (skipped, dev_out) = await asyncio.gather(run_one_browser_test("true"),
                                                                run_one_browser_test(""))
    assert failed == 1 and "1 error" in ci_out, ci_out
    assert "Chromium is missing: apt-get install -y chromium" in ci_out
    assert skipped == 0 and "1 skipped" in dev_out, dev_out
    assert "Chromium is missing" in dev_out
