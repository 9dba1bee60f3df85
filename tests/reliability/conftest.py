"""The reliability suite: every row of docs/reliability.md comes from a check executed here.

A test records what it injected and what it observed with the `row` fixture; the row's result
(passed/failed) is the test's own outcome. `make reliability` runs the whole suite with
RELIABILITY_REPORT=docs/reliability.md and the report is rendered from the rows of that run
(`tests/reliability/report.py`). `make test` runs the fast part (tests not marked `full`).

    def test_zero_byte_image(row):
        ...
        row(area="Bad images", case="zero bytes", injected="a 0-byte .jpg",
            observed="skipped, reason 'empty'")
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from report import render  # tests/reliability/report.py; pytest puts this folder on sys.path

# The shared test helpers (badimages.py, kube_api_server.py) live one folder up.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

_ROWS_KEY = pytest.StashKey[list]()
_OUTCOME_KEY = pytest.StashKey[dict]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_ROWS_KEY] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    outcomes = item.stash.setdefault(_OUTCOME_KEY, {})
    outcomes[report.when] = report.outcome
    return report


@pytest.fixture
def row(request: pytest.FixtureRequest):
    """Records one table row; the result column is filled from the test's outcome."""
    rows: list[dict] = []
    started = time.monotonic()

    def add(*, area: str, case: str, injected: str, observed: str) -> None:
        rows.append({"area": area, "case": case, "injected": injected, "observed": observed})

    yield add
    outcomes = request.node.stash.get(_OUTCOME_KEY, {})
    passed = outcomes.get("call") == "passed"
    for r in rows or [
        {
            "area": "?",
            "case": request.node.name,
            "injected": "",
            "observed": "(the test failed before recording)",
        }
    ]:
        r.update(
            result="pass" if passed else "FAIL",
            test=request.node.nodeid,
            seconds=round(time.monotonic() - started, 1),
        )
        request.config.stash[_ROWS_KEY].append(r)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    target = os.environ.get("RELIABILITY_REPORT")
    rows = session.config.stash.get(_ROWS_KEY, [])
    if not target or not rows:
        return
    Path(target).write_text(render(rows))
    raw = Path(target).with_suffix(".json")
    raw.write_text(json.dumps(rows, indent=1) + "\n")
