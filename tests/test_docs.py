"""Documentation generated from the code stays current."""

from __future__ import annotations

from tests.support.behaviour import DOC, FIRMWARE_DOC, firmware_rendered, rendered


def test_the_behaviour_table_in_docs_is_current() -> None:
    text = DOC.read_text()
    assert rendered(text) == text, "docs/drivers.md is stale: run python -m tests.support.behaviour --write"


def test_the_firmware_state_diagram_in_docs_is_current() -> None:
    text = FIRMWARE_DOC.read_text()
    assert "stateDiagram-v2" in text
    assert firmware_rendered(text) == text, "docs/firmware.md is stale: run python -m tests.support.behaviour --write"
