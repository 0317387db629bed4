"""``edge-agent check`` as a fresh process vs. ``python -c "import <the agent's dependencies>"`` (goal <= 1.5x).

Both as installed on a device (:func:`bench.common.as_on_a_device`: without the dev tools' ``rich``, which
structlog would import, costing the floor and us alike what no device pays).
"""

from __future__ import annotations

import asyncio
import compileall
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.clock import ClockSource
from agent.config import load_config, load_trust_roots
from agent.device import Device
from bench.common import Result, as_on_a_device
from tests.support.documents import DAY, Claims, forge, svc, write_config, write_public_key

# The runtime dependencies in pyproject.toml that the check uses, imported as the agent uses them (msgspec
# validates the configuration since this fourth stop; pydantic, in its place before, is the cloud's;
# PyNaCl verifies since its sixth, in cryptography's place, which the cloud signs with).
DEPENDENCIES = "import aiosqlite, click, msgspec, structlog, nacl.signing"
# This second floor shows what any process that validates one configuration structure pays.
DEPENDENCIES_AND_ONE_MODEL = (
    DEPENDENCIES + "\nclass Config(msgspec.Struct):\n    data_dir: str = '.'\nmsgspec.convert({}, Config)"
)
EDGE_AGENT = str(Path(sys.executable).parent / "edge-agent")


async def _provision(directory: Path) -> Path:
    key = Ed25519PrivateKey.generate()
    config_file = write_config(directory, [write_public_key(directory / "root.pub.pem", key)])
    config = load_config(config_file, {})
    device = await Device.open(config, load_trust_roots(config), ClockSource.system())
    claims = Claims(iat=time.time())
    services = [svc("door", "door:door-2", days=400)]
    await device.accept(forge(key, claims.entitlements(services=services, exp=int(time.time() + 30 * DAY))))
    await device.close()
    return config_file


def _seconds(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def _compare(
    name: str, floor_label: str, floor: list[str], ours: list[str], goal: str, rounds: int, env: dict[str, str]
) -> Result:
    """Median wall times, interleaved; the ratio is the median of per-round ratios."""
    _seconds(floor, env), _seconds(ours, env)
    floors, our_times, ratios = [], [], []
    for round_ in range(rounds):
        if round_ % 2:
            f, o = _seconds(floor, env), _seconds(ours, env)
        else:
            o, f = _seconds(ours, env), _seconds(floor, env)
        floors.append(f)
        our_times.append(o)
        ratios.append(o / f)
    return Result(
        name, floor_label, statistics.median(floors), statistics.median(our_times), statistics.median(ratios), goal
    )


def _compiled() -> None:
    """Our modules' bytecode, as installing the wheel leaves it (the dependencies' is there already).

    Without it, where ``PYTHONDONTWRITEBYTECODE`` is set (as in this environment) every run compiles our
    ~30 modules from source: ~60 ms that no installed device pays, and that the floor never pays."""
    root = Path(__file__).resolve().parent.parent
    for package in ("agent", "protocol", "firmware"):
        compileall.compile_dir(root / package, quiet=1)


def run(rounds: int = 21) -> list[Result]:
    """`edge-agent check` against the import floor, and against the floor plus one structure validated."""
    _compiled()
    with tempfile.TemporaryDirectory() as tmp:
        config_file = asyncio.run(_provision(Path(tmp)))
        check = [EDGE_AGENT, "check", "issue_access", "door:door-1", "--config", str(config_file)]
        env = as_on_a_device(Path(tmp))  # both as installed on a device: without the dev tools' rich
        return [
            _compare(
                "edge-agent check, fresh process",
                "python -c 'import <dependencies>'",
                [sys.executable, "-c", DEPENDENCIES],
                check,
                "<= 1.5",
                rounds,
                env,
            ),
            _compare(
                "edge-agent check, fresh process",
                "same, plus one msgspec structure validated",
                [sys.executable, "-c", DEPENDENCIES_AND_ONE_MODEL],
                check,
                "info",
                rounds,
                env,
            ),
        ]
