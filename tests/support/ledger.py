"""The ledger's command line, in process (``smartplus-cloud``): a helper to run one command, and a
ledger set up with a distributor, an installer with credits, a commercial project and one device."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from cloud_stub.cli import main
from tests.support.documents import DEVICE_ID

CLOUD = str(Path(sys.executable).parent / "smartplus-cloud")
DOOR2 = "office/door/door:door-2"


def cloud(ledger: Path, *args: str, actor: str | None = None) -> tuple[int, Any]:
    """Run one command in process; (exit code, the --json result or the error text)."""
    options = ["--ledger", str(ledger), "--json", *(["--as", actor] if actor else [])]
    result = CliRunner().invoke(main, [*options, *args])
    try:
        return result.exit_code, json.loads(result.stdout)
    except ValueError:
        return result.exit_code, result.output


def setup_ledger(ledger: Path) -> None:
    for args, actor in [
        (("add-account", "d1", "--role", "distributor", "--name", "D"), None),
        (("add-account", "i1", "--role", "installer", "--name", "I", "--parent", "d1"), None),
        (("grant", "i1", "credit"), "d1"),
        (("buy-credits", "100"), "d1"),
        (("allocate", "i1", "60"), "d1"),
        (("add-project", "office", "--type", "commercial", "--installer", "i1", "--created", "2025-07-01",
          "--door", "door-1", "--door", "door-2"), None),
        (("add-device", DEVICE_ID, "--distributor", "d1", "--model", "R29", "--project", "office"), "i1"),
    ]:  # fmt: skip
        code, out = cloud(ledger, *args, actor=actor)
        assert code == 0, (args, out)
