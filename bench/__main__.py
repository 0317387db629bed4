"""``python -m bench [NAME...]``: run the benchmarks (all by default) and print the table."""

from __future__ import annotations

import sys

from agent import logs
from bench import (
    bench_access,
    bench_backlog,
    bench_check_cli,
    bench_cloud,
    bench_decision,
    bench_firmware,
    bench_fleet,
    bench_intake,
    bench_outbox,
)
from bench.common import Result, report

BENCHES = {
    "decision": bench_decision.run,
    "intake": bench_intake.run,
    "check": bench_check_cli.run,
    "outbox": bench_outbox.run,
    "backlog": bench_backlog.run,
    "access": bench_access.run,
    "firmware": bench_firmware.run,
    "cloud": bench_cloud.run,
    "fleet": bench_fleet.run,
}


def main(names: list[str]) -> None:
    """Run the named benchmarks and print a markdown table."""
    logs.configure("error")
    results: list[Result] = []
    for name in names or list(BENCHES):
        print(f"running {name}...", file=sys.stderr, flush=True)
        results += BENCHES[name]()
    print(report(results))


main(sys.argv[1:])
