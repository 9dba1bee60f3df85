"""Renders the rows recorded by the reliability suite as docs/reliability.md."""

from __future__ import annotations

import datetime
import platform

AREAS = (
    "Object-store faults",
    "Preemption",
    "Multi-worker faults",
    "Bad images",
    "Bad configuration",
    "Launcher faults",
    "Security",
)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(rows: list[dict]) -> str:
    today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    passed = sum(r["result"] == "pass" for r in rows)
    lines = [
        "# Reliability",
        "",
        "What streamtrain survives, shown by checks that ran. This file is written by",
        "`make reliability` (`tests/reliability/`); every row below is one executed check, and",
        "its result is that check's outcome. Do not edit by hand.",
        "",
        f"Last run: {today} on {platform.machine()} ({platform.python_version()}); "
        f"{passed} of {len(rows)} checks passed.",
    ]
    order = {a: i for i, a in enumerate(AREAS)}
    for area in sorted({r["area"] for r in rows}, key=lambda a: (order.get(a, 99), a)):
        lines += [
            "",
            f"## {area}",
            "",
            "| Case | Injected | Observed | Result | s |",
            "|---|---|---|---|---|",
        ]
        for r in (r for r in rows if r["area"] == area):
            lines.append(
                f"| {_cell(r['case'])} | {_cell(r['injected'])} | "
                f"{_cell(r['observed'])} | {r['result']} | {r['seconds']} |"
            )
    return "\n".join(lines) + "\n"
