"""Documentation generated from the code stays current."""

from __future__ import annotations

from tests.behaviour import DOC, rendered


def test_the_behaviour_table_in_docs_is_current() -> None:
    text = DOC.read_text()
    assert rendered(text) == text, "docs/drivers.md is stale: run python -m tests.behaviour --write"
