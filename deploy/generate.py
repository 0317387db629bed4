"""Shell completions and man pages generated from the CLI definitions (``make deploy-files``).

The files in ``deploy/completions`` and ``deploy/man`` are what a package installs; they are generated
here from the click commands themselves (click's own completion scripts, click-man's pages), and
``tests/test_deploy.py`` generates them again and fails if the shipped ones differ, so a new option
never ships without its page. The pages carry a fixed date (``DATE``, or ``SOURCE_DATE_EPOCH``): the
same CLI gives the same files.

    python deploy/generate.py [TARGET]      # TARGET: deploy/ by default
"""

from __future__ import annotations

import datetime
import os
import sys
import warnings
from pathlib import Path

import click
from click.shell_completion import get_completion_class

PROGRAMS = {"edge-agent": "agent.cli", "smartplus-cloud": "cloud_stub.cli"}
SHELLS = {"bash": "bash", "zsh": "zsh", "fish": "fish"}  # shell: file suffix
DATE = "2026-11-30"  # the pages' date; SOURCE_DATE_EPOCH wins (reproducible builds)


def _command(module: str) -> click.Command:
    imported = __import__(module, fromlist=["main"])
    command: click.Command = imported.main
    return command


def _date() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is None:
        return DATE
    return datetime.datetime.fromtimestamp(int(epoch), datetime.UTC).strftime("%Y-%m-%d")


def generate(target: Path) -> list[Path]:
    """Write every completion script and man page under ``target``; the files written."""
    from click_man.core import write_man_pages

    from agent.runtime.version import version

    written: list[Path] = []
    (target / "completions").mkdir(parents=True, exist_ok=True)
    (target / "man").mkdir(parents=True, exist_ok=True)
    for program, module in PROGRAMS.items():
        command = _command(module)
        variable = "_" + program.replace("-", "_").upper() + "_COMPLETE"
        for shell, suffix in SHELLS.items():
            completion = get_completion_class(shell)
            assert completion is not None
            path = target / "completions" / f"{program}.{suffix}"
            path.write_text(completion(command, {}, program, variable).source())
            written.append(path)
        before = set((target / "man").iterdir())
        with warnings.catch_warnings():  # click-man 0.6 calls a click helper that click 8.2 deprecates
            warnings.simplefilter("ignore", DeprecationWarning)
            write_man_pages(program, command, version=version(), target_dir=str(target / "man"), date=_date())
        written += sorted(set((target / "man").iterdir()) - before)
    return written


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    for path in generate(out):
        print(path)
