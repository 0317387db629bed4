"""The sidecar (agent/store/sidecar.py): two checksummed slots written in place by turns; a torn write leaves the
state before; floors only go up; a full disk does not stop it once it exists; the older JSON file is read."""

from __future__ import annotations

import json
from pathlib import Path

from agent.clock import Anchor
from agent.entitlements.intake import HighWater
from agent.store import sidecar
from tests.support.tmpfs import fill, mounted

MARK = HighWater(7, b"\x01" * 32)


def test_each_write_takes_the_other_slot_and_a_torn_one_leaves_the_state_before(tmp_path: Path) -> None:
    """The newest slot garbled (a write torn by a power cut): the other slot, one write older, is read."""
    sidecar.update(tmp_path, next_seq=10, high_water={"entitlements": MARK})
    sidecar.update(tmp_path, next_seq=20)
    assert sidecar.load(tmp_path).next_seq == 20
    with (tmp_path / sidecar.FILE_NAME).open("r+b") as file:  # the second write went to slot 0
        file.seek(40)
        file.write(b"torn")
    kept = sidecar.load(tmp_path)
    assert (kept.next_seq, kept.high_water["entitlements"]) == (10, MARK)
    sidecar.update(tmp_path, next_seq=30)  # the garbled slot is simply written over
    assert sidecar.load(tmp_path).next_seq == 30


def test_floors_only_go_up_and_the_newest_anchor_wins(tmp_path: Path) -> None:
    """A lower high-water mark or an older anchor merged in changes nothing; next_seq is the outbox's to set."""
    sidecar.update(tmp_path, high_water={"command": HighWater(5, b"a" * 32)}, anchor=Anchor(100.0, "b", 1.0, 90.0, 1))
    merged = sidecar.update(
        tmp_path, high_water={"command": HighWater(4, b"b" * 32)}, anchor=Anchor(999.0, "b", 2.0, 90.0, 0), next_seq=3
    )
    assert merged.high_water["command"].seq == 5
    assert merged.anchor == Anchor(100.0, "b", 1.0, 90.0, 1)
    assert sidecar.load(tmp_path) == merged


def test_the_json_file_of_earlier_versions_is_read_and_carried_over(tmp_path: Path) -> None:
    """An agent.state.json from before the slots gives the floors until the first write, which keeps them."""
    (tmp_path / sidecar.LEGACY_NAME).write_text(json.dumps({"next_seq": 42, "anchor": [5.0, "boot", 1.0]}))
    assert sidecar.load(tmp_path).next_seq == 42
    assert sidecar.load(tmp_path).anchor == Anchor(5.0, "boot", 1.0)
    sidecar.update(tmp_path, high_water={"trust": MARK})
    kept = sidecar.load(tmp_path)
    assert (kept.next_seq, kept.high_water["trust"]) == (42, MARK)


def test_a_full_disk_does_not_stop_a_sidecar_that_exists(tmp_path: Path) -> None:
    """Both slots are allocated when the file is made: on a file system with no block left, floors still rise."""
    with mounted(tmp_path / "fs", "1m") as data_dir:
        sidecar.update(data_dir, next_seq=1)
        fill(data_dir / "filler")
        sidecar.update(data_dir, next_seq=2, high_water={"entitlements": MARK})
        assert sidecar.load(data_dir).next_seq == 2
