"""``python -m bench [--json] [NAME...]``: run the benchmarks (all by default) and print the table, or
with ``--json`` one JSON object per row (:func:`as_row`: bench, metric, floor, ours, ratio, goal, met)."""

from __future__ import annotations

import json
import sys

from bench import (
    bench_access,
    bench_api,
    bench_backlog,
    bench_check_cli,
    bench_cloud,
    bench_credentials,
    bench_decision,
    bench_firmware,
    bench_fleet,
    bench_hardware,
    bench_hostile,
    bench_idle,
    bench_imports,
    bench_intake,
    bench_ledger,
    bench_outbox,
    bench_portal,
    bench_slots,
)
from bench.common import Result, report
from protocol import logs

BENCHES = {
    "decision": bench_decision.run,
    "intake": bench_intake.run,
    "hostile": bench_hostile.run,
    "check": bench_check_cli.run,
    "outbox": bench_outbox.run,
    "backlog": bench_backlog.run,
    "idle": bench_idle.run,
    "imports": bench_imports.run,
    "access": bench_access.run,
    "credentials": bench_credentials.run,
    "hardware": bench_hardware.run,
    "firmware": bench_firmware.run,
    "slots": bench_slots.run,
    "cloud": bench_cloud.run,
    "ledger": bench_ledger.run,
    "api": bench_api.run,
    "portal": bench_portal.run,
    "fleet": bench_fleet.run,
}


def main(arguments: list[str]) -> None:
    """Run the named benchmarks and print a markdown table (or JSON lines with ``--json``)."""
    as_json = "--json" in arguments
    names = [a for a in arguments if a != "--json"]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        sys.exit(f"unknown benchmark {unknown[0]!r}; known: {', '.join(BENCHES)}")
    logs.configure("error")
    results: list[Result] = []
    for name in names or list(BENCHES):
        print(f"running {name}...", file=sys.stderr, flush=True)
        rows = BENCHES[name]()
        results += rows
        if as_json:  # each benchmark's rows as soon as they are measured
            for r in rows:
                print(json.dumps(as_row(name, r)), flush=True)
    if not as_json:
        print(report(results))


def as_row(bench: str, r: Result) -> dict[str, object]:
    """One row for a program: ``{"bench", "metric", "floor", "ours", "ratio", "goal", "met"}``, the floor and
    ours in ``unit`` (seconds, ``B`` bytes, ``n`` a count), and what the floor is (``floor_is``)."""
    return {
        "bench": bench, "metric": r.name, "floor": r.floor_seconds, "ours": r.ours_seconds, "ratio": r.ratio,
        "goal": r.goal, "met": r.met, "unit": r.unit, "floor_is": r.floor,
    }  # fmt: skip


main(sys.argv[1:])
