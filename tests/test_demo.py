"""The README's main command tells its story to the end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_the_demo_runs_from_an_empty_directory(tmp_path: Path) -> None:
    """python -m demo exits 0 and tells both acts: documents decided on, then the daemon over MQTT."""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-m", "demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    for expected in (
        "accepted: trust seq 1",
        "DENIED  doors_limited",
        "accepted: entitlements seq 2",
        "refused unknown_kid",
        "refused rollback",
        "still in force: entitlements seq 2",
        "state: mode limited, entitlements seq 3",
        "held: True",
        "the cloud got: alarm tamper",
        '"ok": true, "issued": 1',
    ):
        assert expected in result.stdout
    assert (tmp_path / "demo-data" / "agent.toml").exists()
