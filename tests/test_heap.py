"""The daemon freezes its start-up heap (agent/runtime/heap.py): full collections no longer walk it."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap


def test_freeze_moves_what_lives_out_of_the_collected_generations() -> None:
    # In a fresh interpreter: freezing pytest's own heap would outlive this test.
    code = textwrap.dedent(
        """
        import gc, weakref
        from agent.runtime import heap
        class Node:
            pass
        kept = [object() for _ in range(3)]
        cycle = Node()
        cycle.me = cycle
        gone = weakref.ref(cycle)
        del cycle  # start-up garbage: collected first, not frozen for ever
        before = gc.get_freeze_count()
        heap.freeze()
        walked = {id(o) for o in gc.get_objects()}
        assert gc.get_freeze_count() > before
        assert id(kept) not in walked
        assert gone() is None
        young = []
        assert id(young) in {id(o) for o in gc.get_objects()}  # what comes later is collected as ever
        assert gc.garbage == []
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert gc.isenabled()
