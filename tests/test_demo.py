"""The README's main command tells its story to the end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_the_demo_runs_from_an_empty_directory(tmp_path: Path) -> None:
    """python -m demo exits 0 and tells all three acts: documents decided on, the daemon over MQTT, the
    cloud's ledger driving a second door phone (credits, renewal, a call alert, two staged upgrades)."""
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
        "card card-7 opens door-2",
        "the device: mode normal, entitlements seq 2",
        "the cloud lists for p-200: call_alert fall_detected",
        "job up-1 rolled_back (health_check_failed); still running 29.30.2.805 on slot a",
        "the cloud's upgrade status: {'0c110512ab35': 'Failed'}",
        "the device runs 29.30.10.2 on slot b; the cloud's upgrade status: {'0c110512ab35': 'Executed'}",
    ):
        assert expected in result.stdout, result.stdout[-3000:]
    assert (tmp_path / "demo-data" / "agent.toml").exists()


def test_the_interactive_demo_stays_up_for_the_clis_until_interrupted(tmp_path: Path) -> None:
    """``--interactive``: after the story the cloud and the second door phone keep running; the CLIs it
    suggests work against them; Ctrl-C ends it cleanly."""
    import signal
    import time

    root = Path(__file__).resolve().parents[1]
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}
    with subprocess.Popen(
        [sys.executable, "-m", "demo", "--interactive"], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True, env=env,
    ) as demo:  # fmt: skip
        try:
            assert demo.stdout is not None
            deadline = time.monotonic() + 120
            for line in demo.stdout:
                if "Everything stays up" in line:
                    break
                assert time.monotonic() < deadline
            conf = tmp_path / "demo-data" / "door-phone-2" / "agent.toml"
            edge_agent = str(Path(sys.executable).parent / "edge-agent")
            result = subprocess.run(
                [edge_agent, "simulate", "fall", "--source", "mr01-bed-4", "--config", str(conf), "--json"],
                capture_output=True, text=True, check=False, timeout=60,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            assert '"call_alert"' in result.stdout
        finally:
            demo.send_signal(signal.SIGINT)
            code = demo.wait(30)
    assert code == 0
