"""``python -m bench --json`` prints one JSON object per row that a program can check (issue "Performance")."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_json_rows_carry_what_a_program_checks() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--json", "decision"], capture_output=True, text=True, timeout=300, check=True
    ).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) >= 3
    for row in rows:
        assert {"bench", "metric", "floor", "ours", "ratio", "goal", "met", "unit", "floor_is"} <= set(row)
        assert row["bench"] == "decision"
        assert row["ours"] > 0
        assert row["floor"] > 0
        assert abs(row["ratio"] - row["ours"] / row["floor"]) < 0.5 * row["ratio"]  # a median of ratios, near
        assert (row["met"] is None) == (row["goal"] == "info")  # a goal row says whether it is met
