"""Timing helpers: interleaved rounds of floor and ours, medians, and the report table.

This machine is noisy (2 shared cores), so absolute times drift between runs; what compares is the
ratio of ours to a floor measured in the same rounds. Each round times a batch of the floor and a
batch of ours, alternating which goes first, and the reported ratio is the median of the per-round
ratios.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final


@dataclass(frozen=True)
class Result:
    """One benchmark: what was measured against which floor, and the goal for the ratio."""

    name: str
    floor: str
    floor_seconds: float
    ours_seconds: float
    ratio: float
    goal: str  # e.g. "<= 3.0" (ours / floor) or "info"
    unit: str = "s"  # what floor_seconds and ours_seconds measure: seconds, "B" for bytes, "n" a count

    @property
    def met(self) -> bool | None:
        """Whether the ratio meets the goal (None when the row is informational)."""
        if self.goal.startswith("<="):
            return self.ratio <= float(self.goal[2:])
        if self.goal.startswith(">="):
            return self.ratio >= float(self.goal[2:])
        return None


def tool(bench: str, command: str, package: str) -> str:
    """The path of ``command``, installed here with apt if it is missing (a bench measures against a real
    peer); the bench stops, saying so, if it cannot be."""
    found = shutil.which(command)
    if found is None:
        subprocess.run(["apt-get", "install", "-y", "-q", package], capture_output=True, check=False)
        found = shutil.which(command)
    if found is None:
        sys.exit(f"bench {bench}: {package} is not installed and could not be (apt-get install {package})")
    return found


# Installed here, not on a device, and imported by a device's libraries when they find them.
NOT_ON_A_DEVICE: Final = (
    "rich",  # the dev tools' (import-linter, typer): ``import structlog`` imports it (~60 ms and ~10 MiB)
    "greenlet",  # SQLAlchemy's, the cloud's: ``import structlog`` imports it too (~1.1 MiB)
)


def as_on_a_device(directory: Path) -> dict[str, str]:
    """This environment's variables with the packages of :data:`NOT_ON_A_DEVICE` made unimportable (shims
    under ``directory``), for a process measured as installed on a device (the .deb installs the device's
    dependencies alone: tests/test_package.py)."""
    shims = directory / "not-on-a-device"
    for name in NOT_ON_A_DEVICE:
        (shims / name).mkdir(parents=True, exist_ok=True)
        (shims / name / "__init__.py").write_text('raise ImportError("not installed on a device")\n')
    path = [str(shims), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def _batch(fn: Callable[[], object], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def interleaved(
    name: str,
    floor_label: str,
    floor: Callable[[], object],
    ours: Callable[[], object],
    *,
    goal: str,
    number: int,
    rounds: int = 21,
) -> Result:
    """Time ``floor`` and ``ours`` in alternating batches of ``number`` calls; median per-call times."""
    floor(), ours()  # warm caches and imports
    floor_times, our_times, ratios = [], [], []
    for round_ in range(rounds):
        if round_ % 2:
            f, o = _batch(floor, number), _batch(ours, number)
        else:
            o, f = _batch(ours, number), _batch(floor, number)
        floor_times.append(f)
        our_times.append(o)
        ratios.append(o / f)
    return Result(
        name, floor_label, statistics.median(floor_times), statistics.median(our_times), statistics.median(ratios), goal
    )


def _human(value: float, unit: str = "s") -> str:
    if unit == "B":
        return f"{value / 2**20:.1f} MiB"
    if unit == "n":
        return f"{value:,.0f}"
    return _seconds(value)


def _seconds(seconds: float) -> str:
    if seconds >= 0.1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-4:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.2f} µs"


def report(results: list[Result]) -> str:
    """A markdown table of the results (pasted into docs/performance.md)."""
    lines = [
        "| benchmark | floor | floor time | ours | ratio | goal | met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        met = {True: "yes", False: "NO", None: "-"}[r.met]
        times = f"{_human(r.floor_seconds, r.unit)} | {_human(r.ours_seconds, r.unit)}"
        lines.append(f"| {r.name} | {r.floor} | {times} | {r.ratio:.2f}x | {r.goal} | {met} |")
    return "\n".join(lines)
