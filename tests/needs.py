"""What a test needs from the machine, and what happens when the machine lacks it.

A handful of tests need something the suite cannot set up itself: a program from the system's
packages (git), kernel features (user namespaces, a capability root may lack in a container),
an open-file limit only root can raise. Where it is missing, :func:`need` skips the test with
a reason that says what is missing and how to get it, so that ``pytest -ra`` tells a developer
exactly what did not run and why. Under CI (the ``CI`` variable set, as ``.ci/run`` and the
usual CI services do) it fails instead: a CI run must never go green over a test that did not
run, nor let a broken probe hide a broken feature.
"""

from __future__ import annotations

import os

import pytest

CI_OFF = ("", "0", "false", "no")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in CI_OFF


def need(ok: bool, why: str) -> None:
    """Skip the calling test unless ``ok`` (fail under CI); ``why`` names what is missing and
    what to install or change."""
    if ok:
        return
    if in_ci():
        pytest.fail(f"{why} [CI is set: a test CI cannot run fails rather than skips]",
                    pytrace=False)
    # A skip is reported where pytest.skip was called, i.e. here: name the test in the reason.
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
    pytest.skip(f"{test}: {why}" if test else why)
