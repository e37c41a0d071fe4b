"""tests/needs.py: a missing requirement skips with its reason, and fails under CI."""

from __future__ import annotations

import pytest

from tests.needs import need


def test_a_met_need_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    need(True, "unused")


@pytest.mark.parametrize("ci", [None, "", "0", "false"])
def test_a_missing_need_skips_outside_ci(monkeypatch: pytest.MonkeyPatch, ci: str | None
                                         ) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="install frobnicator"):
        need(False, "needs frobnicator: install frobnicator")


@pytest.mark.parametrize("ci", ["true", "1", "yes"])
def test_a_missing_need_fails_under_ci(monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="install frobnicator.*CI is set"):
        need(False, "needs frobnicator: install frobnicator")
